"""minissd: SSD (Liu et al., "SSD: Single Shot MultiBox Detector", ECCV 2016) from scratch.

NumPy for arrays and matrix products, Numba for the loops NumPy cannot express well, and
hand-written backward passes checked against finite differences. This file never imports
numba.cuda: the GPU twins live in ``minissd.cuda`` and are optional.
"""

__version__ = "0.1.0"
