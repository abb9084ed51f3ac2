"""SOPI engine: C-arm geometry, differentiable DRR projector, CT/X-ray I/O, spine segmentation.

Pure Python on torch, numpy, SimpleITK and scipy. Never imports Slicer, Qt or VTK.
"""

__version__ = "0.1.0"
