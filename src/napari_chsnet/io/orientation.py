"""Moving voxel grids between a file's own orientation and the LPS display orientation.

SimpleITK's ``DICOMOrient`` only permutes and flips axes (no resampling), so every voxel
keeps its value and physical position; applying it again with the source orientation code
gives back the file's grid exactly. An oblique grid is oriented to its nearest axes and keeps
its residual rotation in ``Geometry.direction``.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from napari_chsnet.io.volume import Geometry

DISPLAY_ORIENTATION = "LPS"


def orientation_code(image: sitk.Image) -> str:
    """The three-letter DICOM orientation code (e.g. ``"RAS"``) nearest to the image's direction."""
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())


def to_display(image: sitk.Image) -> tuple[sitk.Image, str]:
    """Reorient ``image`` to LPS; returns the reoriented image and the source orientation code."""
    source = orientation_code(image)
    if source == DISPLAY_ORIENTATION:
        return image, source
    return sitk.DICOMOrient(image, DISPLAY_ORIENTATION), source


def geometry_of(image: sitk.Image, source_orientation: str) -> Geometry:
    """The Geometry of a display-oriented SimpleITK image."""
    return Geometry(
        spacing_mm=tuple(float(v) for v in image.GetSpacing()),
        origin_mm=tuple(float(v) for v in image.GetOrigin()),
        direction=tuple(float(v) for v in image.GetDirection()),
        source_orientation=source_orientation,
    )


def image_from_display(array_zyx: np.ndarray, geometry: Geometry) -> sitk.Image:
    """A SimpleITK image of a display-oriented ``(z, y, x)`` array placed by ``geometry``."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_zyx))
    image.SetSpacing(tuple(float(v) for v in geometry.spacing_mm))
    image.SetOrigin(tuple(float(v) for v in geometry.origin_mm))
    image.SetDirection(tuple(float(v) for v in geometry.direction))
    return image


def to_source(image: sitk.Image, source_orientation: str) -> sitk.Image:
    """Undo :func:`to_display`: put a display-oriented image back on the file's own axes."""
    if orientation_code(image) == source_orientation:
        return image
    return sitk.DICOMOrient(image, source_orientation)
