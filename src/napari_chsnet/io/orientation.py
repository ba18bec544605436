"""Moving voxel grids between a file's own orientation and the LPS display orientation.

SimpleITK's ``DICOMOrient`` only permutes and flips axes (no resampling), so every voxel
keeps its value and physical position; applying it again with the source orientation code
gives back the file's grid exactly. An oblique grid is oriented to its nearest axes and keeps
its residual rotation in ``Geometry.direction``. Direction cosines written to a few decimals (e.g.
``0.985, -0.174`` for 10°) are not quite perpendicular unit vectors. A file's direction is read as
the file holds it (masks written as .mha then carry exactly the CT file's direction, which ITK filters
require); where a grid must be orthonormal (NIfTI) a rounding-size departure is replaced by the nearest
orthonormal direction (:func:`straightened`), a larger one (a gantry tilt stored with its shear) is a
real skew. DICOM's ImageOrientationPatient is straightened when read (``dicom_headers``).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from napari_chsnet.io.volume import Geometry

DISPLAY_ORIENTATION = "LPS"
# Grids turned further than this from the patient's axes are warned about: napari shows them, and the
# lung stage splits right from left, on the stored grid without the rotation.
OBLIQUE_WARNING_DEG = 10.0
# Largest departure of a direction matrix from orthonormal (max |MᵀM - I|) taken as rounding of its cosines:
# written to 3 decimals (each off by up to 5e-4) they are up to ~√3·1e-3 off (6° as 0.995/0.105: 1.05e-3, the
# worst tilt 1.41e-3); such a grid is written to NIfTI as the nearest orthonormal one. A larger departure is a
# real skew (a gantry-tilted scan stored with its shear), which only .mha and .nrrd hold.
ROUNDING_DEPARTURE = 2e-3
# Below this departure a direction is used as written (orthonormal to float precision).
ORTHONORMAL_ATOL = 1e-7


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
    """The Geometry of a display-oriented SimpleITK image, its direction as the file holds it (cosines
    rounded to a few decimals included: masks written as .mha keep exactly the CT file's direction)."""
    return Geometry(
        spacing_mm=tuple(float(v) for v in image.GetSpacing()),
        origin_mm=tuple(float(v) for v in image.GetOrigin()),
        direction=tuple(float(v) for v in image.GetDirection()),
        source_orientation=source_orientation,
    )


def orthonormal_departure(columns: np.ndarray) -> float:
    """How far the columns of ``columns`` (3 x k) are from perpendicular unit vectors: max |MᵀM - I|."""
    columns = np.asarray(columns, dtype=float)
    return float(np.abs(columns.T @ columns - np.eye(columns.shape[1])).max())


def nearest_orthonormal(columns: np.ndarray) -> np.ndarray:
    """The perpendicular unit vectors nearest to the columns of ``columns`` (3 x k, k = 2 or 3), by polar
    decomposition: every column moves by the same small angle, none is privileged, and a 3 x 3 matrix
    keeps its handedness."""
    left, _, right = np.linalg.svd(np.asarray(columns, dtype=float), full_matrices=False)
    return left @ right


def is_orthonormal(direction: Sequence[float]) -> bool:
    """Whether a row-major 3x3 direction is orthonormal to float precision (ORTHONORMAL_ATOL)."""
    return orthonormal_departure(np.reshape(np.asarray(direction, dtype=float), (3, 3))) <= ORTHONORMAL_ATOL


def unit_columns(direction: Sequence[float]) -> tuple[float, ...]:
    """A row-major 3x3 direction with each column scaled to unit length (the angles between the axes
    kept): what an .nrrd holds, whose reader takes the length of a 'space directions' column as spacing."""
    matrix = np.reshape(np.asarray(direction, dtype=float), (3, 3))
    return tuple(float(v) for v in (matrix / np.linalg.norm(matrix, axis=0)).ravel())


def straightened(direction: Sequence[float]) -> tuple[float, ...]:
    """A row-major 3x3 direction with the nearest orthonormal one in place of a rounding-size departure
    (above ORTHONORMAL_ATOL, up to ROUNDING_DEPARTURE); any other direction as it is (a skewed grid
    stays skewed)."""
    matrix = np.reshape(np.asarray(direction, dtype=float), (3, 3))
    if ORTHONORMAL_ATOL < orthonormal_departure(matrix) <= ROUNDING_DEPARTURE:
        matrix = nearest_orthonormal(matrix)
    return tuple(float(v) for v in matrix.ravel())


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


def angle_from_axes_deg(direction: Sequence[float]) -> float:
    """The rotation angle (degrees) between a 3x3 direction matrix and its nearest signed permutation
    of the same handedness (0 for a grid on the patient's axes, 30 for an axial grid turned 30°)."""
    matrix = np.reshape(np.asarray(direction, dtype=float), (3, 3))
    handedness = 1.0 if np.linalg.det(matrix) >= 0 else -1.0
    best_trace = -np.inf
    for order in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            axes = np.zeros((3, 3))
            axes[list(order), range(3)] = signs
            if np.linalg.det(axes) * handedness > 0:
                best_trace = max(best_trace, float(np.trace(axes.T @ matrix)))
    # trace(R) = 1 + 2 cos(angle) for the rotation R that takes the axes to the direction
    return float(np.degrees(np.arccos(np.clip((best_trace - 1.0) / 2.0, -1.0, 1.0))))


def oblique_warning(image: sitk.Image) -> str | None:
    """A reader warning when the image's grid is turned more than OBLIQUE_WARNING_DEG from the axes."""
    if image.GetDimension() != 3:
        return None
    angle = angle_from_axes_deg(image.GetDirection())
    if angle <= OBLIQUE_WARNING_DEG:
        return None
    return (
        f"the voxel grid is turned {angle:.0f}° from the patient's axes (oblique scan); it is shown and "
        "segmented on the stored grid without that rotation, so the displayed orientation and the right/left "
        "lung labels follow the stored grid, not the patient"
    )
