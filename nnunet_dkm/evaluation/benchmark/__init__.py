"""``nnUNetv2_dkm_benchmark``: the method plan (``methods``), the evaluated cases (``cases``), the run stages
(``stages``), the verdict rules (``verdicts``), the writing of results (``outputs``) and the command (``cli``)."""
