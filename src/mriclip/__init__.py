"""mriclip: CLIP-style alignment of 3D brain MRI with tabular clinical data."""

__version__ = "0.1.0"
