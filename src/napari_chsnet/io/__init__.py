"""Reading and writing CT volumes and masks with their physical geometry."""

from napari_chsnet.io.volume import CTVolume, Geometry

__all__ = ["CTVolume", "Geometry"]
