"""Datasets: CamVid for mmseg (mmseg 1.x has none)."""
__all__: list[str] = []
try:
    from .camvid import CamVidDataset  # noqa: F401
    __all__.append('CamVidDataset')
except ImportError:  # mmseg missing: the wrapper registry says what to install
    pass
