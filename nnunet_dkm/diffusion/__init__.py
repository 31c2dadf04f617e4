"""Diffusion module (DM): MONAI network and schedules, presets, checkpoint I/O, kinetic feature extraction."""
