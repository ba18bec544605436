"""What a napari layer holds for this plugin, read from the layer alone: a CT or a mask, its grid and
voxel volume, the run that wrote it (metadata keys), and the axial slices the user edited (for a
run's masks, those that differ from the run's per-slice checksums, computed when asked).

``results.ResultLayers`` finds, writes and watches the result layers with these; the panels use
them to pick CTs and masks.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image, Layer

from napari_chsnet.errors import InvalidVolumeError
from napari_chsnet.io.hounsfield import HU, INTENSITY_KEY
from napari_chsnet.io.readers import in_hounsfield_units
from napari_chsnet.io.volume import CTVolume, Geometry
from napari_chsnet.napari_hooks import (
    GEOMETRY_KEY,
    PROBABILITY_KEY,
    SOURCE_KEY,
    geometry_from_meta,
)
from napari_chsnet.registry import (
    INFECTION_LAYER,
    LUNGS_LAYER,
    PROBABILITY_LAYER,
)
from napari_chsnet.report import RunInfo

if TYPE_CHECKING:
    pass


RUN_KEY = "chsnet_run"  # layer metadata: the RunInfo (as a dict) of the run that wrote the layer
CT_LAYER_KEY = "chsnet_ct_layer"  # layer metadata: name of the CT layer the masks belong to
CT_ID_KEY = "chsnet_ct_id"  # layer metadata: str(unique_id) of that CT layer
CT_SOURCE_KEY = "chsnet_ct_source"  # layer metadata: that CT's source file ("" if unknown)
# Set by a panel's paint and data events: read them through ``was_edited`` and ``edited_slices``, which
# compare a run's masks with their ``SLICE_CHECKSUMS_KEY`` instead (an undo does not clear these).
EDITED_KEY = "chsnet_edited"  # layer metadata: True once the user edited the Labels layer
EDITED_SLICES_KEY = "chsnet_edited_slices"  # layer metadata: sorted axial indices the user painted
SPACING_KEY = "chsnet_spacing_warning"  # result-layer metadata: their CT's spacing_warning, if any
CHECKSUM_KEY = "chsnet_checksum"  # result-layer metadata: ``data_checksum`` of the data as written
SLICE_CHECKSUMS_KEY = "chsnet_slice_checksums"  # a run's masks: ``slice_checksums`` as written
LABEL_NAMES_KEY = "label_names"  # a run's lungs layer: its labels' names (only the lungs have them)
UNIT_SPACING_WARNING = (
    "No physical voxel size: the layer was not opened with napari-chsnet's reader and its scale is "
    "1 × 1 × 1, so volumes assume 1 mm voxels and are wrong unless the scan's are. Open the scan with "
    "File → Open, or set the layer's scale to its voxel size in mm (z, y, x)."
)
LAYER_SCALE_WARNING = (
    "Voxel size taken from the layer's scale ({z:g} × {y:g} × {x:g} mm, z × y × x): the layer was not "
    "opened with napari-chsnet's reader, so check that this is the scan's voxel size."
)
MASK_LAYERS = (LUNGS_LAYER, INFECTION_LAYER)
RESULT_LAYERS = (LUNGS_LAYER, INFECTION_LAYER, PROBABILITY_LAYER)
# A mask's name says what it holds: "infection corrected", "P1_inf", "lesions"; "lungs fixed".
_INFECTION_NAME = re.compile(r"infect|lesion|(?<![a-z])inf(?![a-z])", re.IGNORECASE)
_LUNGS_NAME = re.compile(r"lung", re.IGNORECASE)


def ct_volume_from_layer(layer: Layer) -> CTVolume:
    """The CTVolume (HU array, geometry, study metadata) of a napari image layer.

    Raises:
        InvalidVolumeError: the layer is not a single-channel 3-D image.
    """
    if not isinstance(layer, Image) or layer.rgb or layer.multiscale:
        raise InvalidVolumeError(
            f"Layer '{layer.name}' is not a single-channel CT image; choose the CT's image layer "
            "(opened with File → Open in Hounsfield units)."
        )
    if layer.data.ndim != 3:
        raise InvalidVolumeError(
            f"Layer '{layer.name}' has shape {tuple(layer.data.shape)}; the networks need a 3-D (z, y, x) "
            "CT volume. Open the whole series (a DICOM folder or one NIfTI/MHA/NRRD file)."
        )
    geometry = layer_geometry(layer)
    study = {k: v for k, v in layer.metadata.items() if k not in (GEOMETRY_KEY, SOURCE_KEY)}
    study["warnings"] = list(study.get("warnings", []))  # the layer's own list stays as it is
    spacing = spacing_warning(layer)
    if spacing is not None:  # before the intensity check: intensity_converted reads the last warning
        study["warnings"].append(spacing)
    source = str(layer.metadata.get(SOURCE_KEY) or layer.name)
    volume = CTVolume(hu=np.asarray(layer.data), geometry=geometry, source=source, metadata=study)
    if INTENSITY_KEY in layer.metadata:  # opened by this plugin's reader: already checked and in HU
        return volume
    # Another reader's layer (or an array): its values were never checked. An 8-bit file read as
    # HU graded a normal scan CT-3, so it gets the reader's check and conversion here.
    return in_hounsfield_units(volume)


def intensity_converted(layer: Layer, volume: CTVolume) -> str | None:
    """The warning of a conversion ``ct_volume_from_layer`` made itself (None if it made none)."""
    if INTENSITY_KEY in layer.metadata or volume.metadata.get(INTENSITY_KEY, HU) == HU:
        return None
    return volume.metadata["warnings"][-1]


def ct_layer_choices(layers: Iterable[Layer]) -> list[tuple[str, Image]]:
    """Combo-box choices of the layers that can be a CT: single-channel 3-D images that are not a
    probability map (a run's, or one this plugin's reader opened)."""
    return [(layer.name, layer) for layer in layers if not_a_ct_because(layer) is None]


def not_a_ct_because(layer: Layer) -> str | None:
    """Why ``layer`` is not offered as a CT (None when it is), in words for a notification."""
    if not isinstance(layer, Image):
        return "is not an image layer"
    if layer.rgb:
        return "is a colour (RGB) image"
    if layer.ndim != 3:
        return f"is {layer.ndim}-D"
    if RUN_KEY in layer.metadata or PROBABILITY_KEY in layer.metadata:
        return "is an infection probability map"
    return None


def opened_as_ct(layer: Layer) -> bool:
    """Whether ``layer`` is a CT opened by this plugin's reader or sample (its grid and source in the
    metadata) that ``not_a_ct_because`` accepts: never a run's result, nor another reader's image."""
    meta = layer.metadata
    return (
        GEOMETRY_KEY in meta
        and SOURCE_KEY in meta
        and layer.name not in RESULT_LAYERS
        and not_a_ct_because(layer) is None
    )


def edited_slices_of(atoms: Iterable[Any], n_slices: int) -> set[int]:
    """Axial indices touched by a Labels ``paint`` event's history atoms.

    An atom is napari's ``_MaskedPaintAtom`` (brush, fill, polygon: a bounding-box ``slice_key``
    and an optional mask inside it) or the ``(indices, old_values, new_values)`` tuple that
    ``data_setitem`` records (indices: a tuple of index arrays, or slices).
    """
    touched: set[int] = set()
    for atom in atoms:
        if hasattr(atom, "slice_key"):
            z_range = range(*atom.slice_key[0].indices(n_slices))
            if atom.mask is not None:
                touched.update(
                    z_range.start + int(z)
                    for z in np.nonzero(atom.mask.reshape(atom.mask.shape[0], -1).any(1))[0]
                )
            else:
                touched.update(z_range)
            continue
        index = atom[0]
        first = index[0] if isinstance(index, tuple) else index
        if isinstance(first, slice):
            touched.update(range(*first.indices(n_slices)))
        elif isinstance(first, (int, np.integer)):
            touched.add(int(first))
        else:
            array = np.asarray(first)
            if array.dtype == bool:  # a boolean mask over the whole volume
                touched.update(int(z) for z in np.nonzero(array.reshape(array.shape[0], -1).any(1))[0])
            else:
                touched.update(int(z) for z in np.unique(array))
    return {z for z in touched if 0 <= z < n_slices}


def _run_slice_checksums(layer: Layer) -> list[int] | None:
    """The CRC-32 of each axial slice as the run wrote the mask (``SLICE_CHECKSUMS_KEY``), or None
    for a layer without them or whose slice count has changed since."""
    stored = layer.metadata.get(SLICE_CHECKSUMS_KEY)
    if isinstance(stored, (list, tuple)) and len(stored) == layer.data.shape[0]:
        return list(stored)
    return None


def edited_slices(layer: Layer) -> tuple[int, ...]:
    """The axial slices the user edited in a Labels layer. A run's mask (``_run_slice_checksums``):
    the slices that now differ from the run's, computed when asked (about 0.1 ms a 512 × 512 slice),
    whatever changed them (a stroke, Ctrl+Z, Ctrl+Shift+Z, on a hidden layer, with no panel open).
    Any other layer: the slices its paint events recorded (``EDITED_SLICES_KEY``)."""
    stored = _run_slice_checksums(layer)
    if stored is None:
        return tuple(int(z) for z in layer.metadata.get(EDITED_SLICES_KEY, ()))
    return tuple(z for z, crc in enumerate(slice_checksums(layer.data)) if crc != stored[z])


def was_edited(layer: Layer) -> bool:
    """Whether the user edited a layer: a run's mask while a slice differs from the run's
    (``edited_slices``), any other layer once an edit marked it (``EDITED_KEY``)."""
    if _run_slice_checksums(layer) is None:
        return bool(layer.metadata.get(EDITED_KEY))
    return bool(edited_slices(layer))


def data_checksum(data: Any) -> str:
    """A fingerprint of a layer's data (dtype, shape, CRC-32 of the bytes): about 30 ms for a
    512 × 512 × 150 mask."""
    array = np.ascontiguousarray(np.asarray(data))
    return f"{array.dtype.str}:{'x'.join(map(str, array.shape))}:{zlib.crc32(array.reshape(-1).view(np.uint8)):08x}"


def slice_checksums(data: Any) -> list[int]:
    """CRC-32 of each axial slice of a mask: about 0.1 ms per 512 × 512 slice."""
    return [zlib.crc32(np.ascontiguousarray(plane)) for plane in np.asarray(data)]


def mask_kind(layer: Layer) -> str | None:
    """``"lungs"``, ``"infection"`` or None: what a Labels layer looks like it holds. A run's own
    layers are known by their metadata under any name (only the lungs carry label names), others
    by their name (infection first: "lung lesions" is an infection mask)."""
    if RUN_KEY in layer.metadata:
        return LUNGS_LAYER if LABEL_NAMES_KEY in layer.metadata else INFECTION_LAYER
    if _INFECTION_NAME.search(layer.name):
        return INFECTION_LAYER
    if _LUNGS_NAME.search(layer.name):
        return LUNGS_LAYER
    return None


def records_a_ct(layer: Layer) -> bool:
    """Whether a mask records the CT it belongs to (a run's masks do; opened or drawn ones do not)."""
    return any(key in layer.metadata for key in (RUN_KEY, CT_ID_KEY, CT_LAYER_KEY))


def on_one_grid(layer: Layer, other: Layer) -> bool:
    """Whether two layers lie voxel for voxel on one grid: the same shape, scale, translate and
    affine, and the same ``chsnet_geometry`` (an oblique scan's rotation is only there) where both
    carry one."""
    if tuple(layer.data.shape) != tuple(other.data.shape):
        return False
    if not (
        np.allclose(layer.scale, other.scale, rtol=1e-4, atol=1e-6)
        and np.allclose(layer.translate, other.translate, rtol=0, atol=0.01)
        and np.allclose(layer.affine.affine_matrix, other.affine.affine_matrix, atol=1e-6)
    ):
        return False
    mine, theirs = layer.metadata.get(GEOMETRY_KEY), other.metadata.get(GEOMETRY_KEY)
    if mine is None or theirs is None:
        return True
    a, b = Geometry.from_metadata(mine), Geometry.from_metadata(theirs)
    return bool(
        np.allclose(a.spacing_mm, b.spacing_mm, rtol=1e-4, atol=1e-6)
        and np.allclose(a.origin_mm, b.origin_mm, rtol=0, atol=0.01)
        and np.allclose(a.direction, b.direction, atol=1e-4)
    )


def layer_geometry(layer: Layer) -> Geometry:
    """The voxel grid of a layer: its ``chsnet_geometry`` metadata, else its scale and translate
    (``spacing_warning`` says when the latter is all there is)."""
    return geometry_from_meta(
        {"metadata": layer.metadata, "scale": tuple(layer.scale), "translate": tuple(layer.translate)}
    )


def spacing_warning(layer: Layer) -> str | None:
    """Why the voxel size ``layer_geometry`` gives a layer may not be the scan's, or None when it is
    the scan's own: a layer opened by this plugin's reader carries its file's geometry, and a run's
    masks carry their CT's (and its warning, ``SPACING_KEY``). Any other layer (another reader's, a
    .npy or .tif, an array added from the console) only has napari's scale, which is 1 unless set.

    The text names no layer, so the CT's warning and its masks' are one warning in a report.
    """
    if SPACING_KEY in layer.metadata:
        return str(layer.metadata[SPACING_KEY])
    if GEOMETRY_KEY in layer.metadata:
        return None
    scale = tuple(float(v) for v in layer.scale[-3:])
    if np.allclose(scale, 1.0):
        return UNIT_SPACING_WARNING
    z, y, x = scale
    return LAYER_SCALE_WARNING.format(z=z, y=y, x=x)


def run_info_of(layer: Layer) -> RunInfo | None:
    """The RunInfo stored on a result layer, or None for masks drawn or opened by hand."""
    stored = layer.metadata.get(RUN_KEY)
    return RunInfo(**stored) if isinstance(stored, dict) else None


def source_of(layer: Layer) -> str:
    return str(layer.metadata.get(SOURCE_KEY) or "")
