"""mriclip: CLIP-style alignment of 3D brain MRI with tabular clinical data.

``from mriclip import Predictor`` gives the model applied to new scans
(:class:`mriclip.predictor.Predictor`); it is imported on first use, so ``import mriclip``
stays light.
"""

__version__ = "0.1.0"
__all__ = ["Predictor", "__version__"]


def __getattr__(name: str):
    if name == "Predictor":
        from mriclip.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'mriclip' has no attribute {name!r}")
