"""``python -m pretrain_dm`` (and ``torchrun -m pretrain_dm``) = ``nnUNetv2_dkm_pretrain``."""

from pretrain_dm.cli import main

main()
