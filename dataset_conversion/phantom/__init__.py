"""The embedded synthetic breast DCE-MRI phantom (``nnUNetv2_dkm_synthesize``): anatomy, contrast kinetics (dcmri),
scanner, the TCIA label rule, one exam at a time (``case``), the dataset writer (``synthesize``) and its statistics
(``stats``)."""
