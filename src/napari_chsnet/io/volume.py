"""The in-memory CT volume every other part of the package works on.

Convention (chosen once, used everywhere): the voxel array is ``(z, y, x)`` in **LPS display
orientation**: x grows toward the patient's Left, y toward Posterior, z toward Superior
(slice 0 is the most inferior). Shown by napari with axis 0 as the slider, an axial slice
then appears in the radiological convention: the patient's right on the screen's left,
anterior at the top. Readers reorient whatever the file holds (RAS, permuted axes, prone,
oblique → nearest axes) into this orientation and remember the source orientation so that
writers put every voxel back exactly where it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class NiftiTransform:
    """The placing fields of a NIfTI-1 source header, copied verbatim into the NIfTI masks written on
    its grid, so that tools reading the sform (nibabel, FSL) or the units see them where they see the CT.

    Attributes:
        shape_ijk: the source's voxel counts along i, j, k (1 for a missing axis).
        qform_code, sform_code: the header's codes (0: not set).
        quatern: quatern_b, quatern_c, quatern_d, qoffset_x, qoffset_y, qoffset_z.
        srow: srow_x, srow_y, srow_z (12 values, row by row).
        pixdim: pixdim[0..7] (pixdim[0] is qfac).
        xyzt_units: the units byte.
    """

    shape_ijk: tuple[int, int, int]
    qform_code: int
    sform_code: int
    quatern: tuple[float, ...]
    srow: tuple[float, ...]
    pixdim: tuple[float, ...]
    xyzt_units: int

    def to_metadata(self) -> dict[str, Any]:
        return {
            "shape_ijk": list(self.shape_ijk),
            "qform_code": self.qform_code,
            "sform_code": self.sform_code,
            "quatern": list(self.quatern),
            "srow": list(self.srow),
            "pixdim": list(self.pixdim),
            "xyzt_units": self.xyzt_units,
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> NiftiTransform:
        return cls(
            shape_ijk=tuple(int(v) for v in meta["shape_ijk"]),  # type: ignore[arg-type]
            qform_code=int(meta["qform_code"]),
            sform_code=int(meta["sform_code"]),
            quatern=tuple(float(v) for v in meta["quatern"]),
            srow=tuple(float(v) for v in meta["srow"]),
            pixdim=tuple(float(v) for v in meta["pixdim"]),
            xyzt_units=int(meta["xyzt_units"]),
        )


@dataclass(frozen=True)
class Geometry:
    """Physical geometry of a display-oriented (LPS) voxel grid, in SimpleITK's (x, y, z) order.

    Attributes:
        spacing_mm: voxel size along x, y, z in mm.
        origin_mm: physical LPS position (mm) of voxel (x=0, y=0, z=0).
        direction: row-major 3x3 direction cosines of the display grid (identity unless the
            source was oblique).
        source_orientation: SimpleITK/DICOM orientation code of the file's own grid
            (e.g. ``"LPS"``, ``"RAS"``, ``"LIP"``); writers reorient back to it.
        nifti: the transform fields of a NIfTI-1 source's header (None for other sources); NIfTI
            files written on the source grid carry them unchanged. Not part of equality.
    """

    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    source_orientation: str = "LPS"
    nifti: NiftiTransform | None = field(default=None, compare=False, repr=False)

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        """Spacing in array axis order (z, y, x)."""
        return (self.spacing_mm[2], self.spacing_mm[1], self.spacing_mm[0])

    @property
    def voxel_volume_ml(self) -> float:
        return float(np.prod(self.spacing_mm)) / 1000.0

    def napari_scale(self) -> tuple[float, float, float]:
        return self.spacing_zyx

    def napari_translate(self) -> tuple[float, float, float]:
        return (self.origin_mm[2], self.origin_mm[1], self.origin_mm[0])

    def to_metadata(self) -> dict[str, Any]:
        """Plain-JSON form, stored in napari layer metadata under ``"chsnet_geometry"``."""
        meta: dict[str, Any] = {
            "spacing_mm": list(self.spacing_mm),
            "origin_mm": list(self.origin_mm),
            "direction": list(self.direction),
            "source_orientation": self.source_orientation,
        }
        if self.nifti is not None:
            meta["nifti"] = self.nifti.to_metadata()
        return meta

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> Geometry:
        return cls(
            spacing_mm=tuple(float(v) for v in meta["spacing_mm"]),
            origin_mm=tuple(float(v) for v in meta["origin_mm"]),
            direction=tuple(float(v) for v in meta["direction"]),
            source_orientation=str(meta.get("source_orientation", "LPS")),
            nifti=NiftiTransform.from_metadata(meta["nifti"]) if meta.get("nifti") else None,
        )


@dataclass
class CTVolume:
    """A CT in Hounsfield units on a display-oriented grid.

    Attributes:
        hu: ``(z, y, x)`` array of HU (float32 or int16).
        geometry: physical geometry of that grid.
        source: the path it was read from (or a description such as ``"synthetic phantom"``).
        metadata: study/patient/series fields for reports (DICOM tags when present), plus
            reader warnings under ``"warnings"`` (e.g. uneven slice spacing, non-CT modality).
    """

    hu: np.ndarray
    geometry: Geometry
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.hu.ndim != 3:
            raise ValueError(f"CTVolume.hu must be 3-D (z, y, x); got shape {self.hu.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)  # type: ignore[return-value]
