"""lesionlocator: promptable 3D lesion segmentation and longitudinal tracking at cohort scale."""

__version__ = "0.1.0"
