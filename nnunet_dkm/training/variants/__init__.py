"""Thin nnU-Net-style subclasses of nnUNetTrainerDKM (and short vanilla nnUNetTrainer variants), one idea per file."""
