"""npe2 reader, writer and sample-data functions (named in napari.yaml); no Qt imports.

Layers carry their grid in ``metadata["chsnet_geometry"]`` (Geometry.to_metadata()) so that
anything drawn on them is written back onto the source file's voxels.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from napari_chsnet.errors import InvalidVolumeError
from napari_chsnet.io.dicom import looks_like_dicom
from napari_chsnet.io.dicom_headers import folder_has_dicom
from napari_chsnet.io.hounsfield import is_label_map, one_value_only
from napari_chsnet.io.phantom import sample_ct
from napari_chsnet.io.readers import (
    DICOM_SUFFIXES,
    IMAGE_SUFFIXES,
    PICTURE_SUFFIXES,
    in_hounsfield_units,
    is_supported_path,
    read_stored_values,
    suffix_of,
)
from napari_chsnet.io.volume import CTVolume, Geometry
from napari_chsnet.io.writers import WRITE_SUFFIXES, write_volume
from napari_chsnet.registry import INFECTION_COLORS, LUNG_COLORS, UNEXPECTED_LABEL_COLOR

LayerData = tuple[Any, dict[str, Any], str]
PathOrPaths = str | list[str]

GEOMETRY_KEY = "chsnet_geometry"
SOURCE_KEY = "chsnet_source"
PROBABILITY_KEY = "chsnet_probability"  # layer metadata: an infection-probability map (never a CT)
PROBABILITY_OPACITY = 0.5  # a probability map over the CT (a run's layer and a reopened file alike)
LUNG_WINDOW_HU = (-1350.0, 150.0)  # lung window: level -600, width 1500
# Layer axes of the LPS display array (z, y, x), named by the way their index runs: inferior to
# superior, anterior to posterior, patient's right to left.
AXIS_LABELS = ("I-S", "A-P", "R-L")
UNITS = ("mm", "mm", "mm")
PROBABILITY_FILE_WORD = "probability"  # in the name of every probability map file the plugin writes


def get_reader(path: PathOrPaths) -> Callable[[PathOrPaths], list[LayerData]] | None:
    """The reader for a CT file, a DICOM folder or a list of DICOM files; None for anything else."""
    if isinstance(path, list):
        if len(path) == 1:
            return get_reader(path[0])
        return read_ct_layers if path and all(looks_like_dicom(Path(p)) for p in path) else None
    candidate = Path(path)
    if candidate.is_dir():
        return read_ct_layers if folder_has_dicom(candidate) else None
    return read_ct_layers if is_supported_path(candidate) else None


def read_ct_layers(path: PathOrPaths) -> list[LayerData]:
    """Read a CT and return it as one napari image layer in HU with its physical geometry; a mask file
    (e.g. the lungs.nii.gz ``chsnet segment`` writes) comes back as a labels layer instead, and a
    probability map the plugin wrote (a float file in [0, 1] named like infection_probability.nii.gz,
    see ``_is_probability_file``) as an image in the panel's JET colours. A file holding one value only
    (an empty mask, a blank volume) opens with a warning saying so.

    napari's "Open as stack" passes even a single file or folder as a list: it is unwrapped.
    Several paths are read as the DICOM files of one series (``read_ct`` refuses anything else).
    """
    paths = [path] if isinstance(path, str) else [str(p) for p in path]
    volume = read_stored_values(paths[0] if len(paths) == 1 else paths)
    blank = one_value_only(volume.hu)
    if blank:  # an all-zero file opened as an empty labels layer without a word
        volume.metadata.setdefault("warnings", []).append(
            f"the file holds {blank}, so it is an empty mask or a blank volume, not a CT"
        )
    # A mask or a probability map read as a CT would be a grey image in the lung window, offered
    # for segmentation, with a warning that it is not in HU.
    if _is_label_volume(volume.hu):
        layer = labels_layer(volume)
    elif _is_probability_file(paths) and _is_probability_volume(volume.hu):
        layer = probability_layer(volume)
    else:
        layer = ct_layer(in_hounsfield_units(volume))
    for message in volume.metadata.get("warnings", []):
        warnings.warn(f"{volume.source}: {message}", stacklevel=2)
    return [layer]


def _is_label_volume(values: np.ndarray) -> bool:
    """Integers 0-255 that make a label map (``is_label_map`` looks at a subsample and a few planes; the
    whole range is checked here so that the uint8 labels hold every value)."""
    return (
        values.dtype.kind in "iub"
        and values.size > 0
        and is_label_map(values)
        and int(values.min()) >= 0
        and int(values.max()) <= 255
    )


def _is_probability_file(paths: list[str]) -> bool:
    """Whether the file is named as the plugin names its probability maps: ``chsnet segment``'s
    probability.nii.gz, the panel's <case>_infection_probability export and napari's Save Layers of
    the ``infection probability`` layer, in a format the plugin writes. The values alone cannot
    tell: a CT normalised to [0, 1] and saved as floats has them too, and must open as a CT."""
    if len(paths) != 1:
        return False
    path = Path(paths[0])
    return (
        not path.is_dir() and suffix_of(path) in WRITE_SUFFIXES and PROBABILITY_FILE_WORD in path.name.lower()
    )


def _is_probability_volume(values: np.ndarray) -> bool:
    """Floats all in [0, 1], not all whole numbers: the values of a probability map (read as one only
    from a file named as the plugin names them, ``_is_probability_file``), never a CT in HU or a
    mask."""
    if values.dtype.kind != "f" or values.size == 0:
        return False
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    return low >= 0.0 and high <= 1.0 and bool(np.any(values != np.round(values)))


def probability_layer(volume: CTVolume, name: str | None = None) -> LayerData:
    """The image LayerData of a probability map: shown as the panel shows a run's (JET, 0-1, added
    over the CT) and marked so that it is not offered as a CT."""
    # Imported here: the colormap module loads napari's colormaps (no Qt), needed only for this.
    from napari_chsnet.widgets.colormaps import CHSNET_JET

    kwargs = _placement(volume, name)
    kwargs["metadata"][PROBABILITY_KEY] = True
    kwargs.update(
        colormap=CHSNET_JET, contrast_limits=(0.0, 1.0), blending="additive", opacity=PROBABILITY_OPACITY
    )
    return (volume.hu.astype(np.float32, copy=False), kwargs, "image")


def ct_layer(volume: CTVolume, name: str | None = None) -> LayerData:
    """The image LayerData of a CTVolume, shown in the lung window (see ``widen_contrast_range``)."""
    kwargs = {
        **_placement(volume, name),
        "colormap": "gray",
        "contrast_limits": LUNG_WINDOW_HU,
    }
    return (volume.hu, kwargs, "image")


def labels_layer(volume: CTVolume, name: str | None = None) -> LayerData:
    """The labels LayerData of a mask file read as a CTVolume, in the plugin's lung or infection colours
    where its values fit them (a file named infection*: 0/1; otherwise 0/1/2 as the lungs)."""
    data = volume.hu.astype(np.uint8)
    kwargs = _placement(volume, name)
    colors = _label_colors(kwargs["name"], int(data.max()))
    if colors is not None:
        kwargs["colormap"] = {**colors, None: UNEXPECTED_LABEL_COLOR}
    return (data, kwargs, "labels")


def _label_colors(name: str, highest: int) -> dict[int, tuple[float, ...]] | None:
    if "infection" in name.lower() and highest <= 1:
        return INFECTION_COLORS
    return LUNG_COLORS if highest <= 2 else None  # None: napari's own label colours


def _placement(volume: CTVolume, name: str | None) -> dict[str, Any]:
    """Name, physical placement and metadata (the grid the writers need) shared by image and labels."""
    metadata = {key: value for key, value in volume.metadata.items()}
    metadata[GEOMETRY_KEY] = volume.geometry.to_metadata()
    metadata[SOURCE_KEY] = volume.source
    return {
        "name": name or _layer_name(volume.source),
        "scale": volume.geometry.napari_scale(),
        "translate": volume.geometry.napari_translate(),
        "metadata": metadata,
        **physical_axes(),
    }


def physical_axes() -> dict[str, Any]:
    """``units`` (mm) and ``axis_labels`` layer arguments where napari takes them (0.5.1 on: 0.5.0
    mistook them for channel lists in ``add_image``); nothing on older versions."""
    return {"units": UNITS, "axis_labels": AXIS_LABELS} if _napari_version() >= (0, 5, 1) else {}


@cache
def _napari_version() -> tuple[int, ...]:
    numbers = re.findall(r"\d+", version("napari"))[:3]
    return tuple(int(n) for n in numbers)


def widen_contrast_range(layer: Any) -> None:
    """Let the contrast slider of a CT layer reach every value of its data, keeping its contrast limits.

    napari sets the slider's range to the ``contrast_limits`` a layer is created with (napari#570),
    and LayerData cannot set the range, so a CT opened in the lung window cannot be moved to a
    soft-tissue or bone window. The reader cannot reach the layer napari makes from its LayerData:
    whoever holds it (e.g. a handler of ``viewer.layers.events.inserted``) calls this.
    """
    limits = tuple(layer.contrast_limits)
    data = np.asarray(layer.data)
    if data.size == 0:
        return
    low, high = float(np.min(data)), float(np.max(data))
    layer.contrast_limits_range = (min(low, limits[0]), max(high, limits[1]))
    layer.contrast_limits = limits


def _layer_name(source: str) -> str:
    path = Path(source.split(" DICOM files in ")[-1])
    suffix = suffix_of(path)
    return path.name[: -len(suffix)] if suffix and path.name.lower().endswith(suffix) else path.name


def geometry_from_meta(meta: dict[str, Any]) -> Geometry:
    """The layer's Geometry: from ``metadata["chsnet_geometry"]``, else from its scale and translate."""
    stored = (meta.get("metadata") or {}).get(GEOMETRY_KEY)
    if stored is not None:
        return Geometry.from_metadata(stored)
    scale = tuple(float(v) for v in meta.get("scale", (1.0, 1.0, 1.0)))[-3:]
    translate = tuple(float(v) for v in meta.get("translate", (0.0, 0.0, 0.0)))[-3:]
    return Geometry(spacing_mm=scale[::-1], origin_mm=translate[::-1])  # type: ignore[arg-type]


def _writing_geometry(meta: dict[str, Any], shape: tuple[int, ...]) -> Geometry:
    """The grid a layer is written on: its own ``chsnet_geometry``, else that of an open layer on the
    same grid (napari's "New labels layer" copies a CT's scale and translate but not its metadata,
    which hold an oblique scan's rotation), else its scale and translate."""
    if (meta.get("metadata") or {}).get(GEOMETRY_KEY) is None:
        twin = _open_layer_on_the_same_grid(meta, shape)
        if twin is not None:
            return Geometry.from_metadata(twin.metadata[GEOMETRY_KEY])
    return geometry_from_meta(meta)


def _open_layer_on_the_same_grid(meta: dict[str, Any], shape: tuple[int, ...]) -> Any:
    from napari import current_viewer

    viewer = current_viewer()
    if viewer is None:
        return None
    scale, translate = (np.asarray(meta.get(key, default), float)[-3:] for key, default in
                        (("scale", (1.0,) * 3), ("translate", (0.0,) * 3)))  # fmt: skip
    for layer in viewer.layers:
        if (
            GEOMETRY_KEY in layer.metadata
            and tuple(layer.data.shape[-3:]) == tuple(shape[-3:])
            and np.allclose(np.asarray(layer.scale)[-3:], scale)
            and np.allclose(np.asarray(layer.translate)[-3:], translate)
        ):
            return layer
    return None


def _output_path(path: str) -> Path:
    """Append .nii.gz to a path given without a suffix (napari may pass a bare name); only a known file
    suffix counts as one, so "lungs_v1.2" becomes "lungs_v1.2.nii.gz" (an unwritable known one, such as
    .mhd or .png, is left for write_volume to refuse by name)."""
    output = Path(path)
    known = suffix_of(output) in (*WRITE_SUFFIXES, *IMAGE_SUFFIXES, *DICOM_SUFFIXES, *PICTURE_SUFFIXES)
    return output if known else output.with_name(output.name + WRITE_SUFFIXES[0])


def _volume_data(data: Any, path: str) -> np.ndarray:
    array = np.asarray(data)
    if array.ndim != 3:
        raise InvalidVolumeError(
            f"{path}: only 3-D (z, y, x) layers can be saved as a CT volume, this one has shape {array.shape}."
        )
    return array


def write_labels(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write a Labels layer as uint8 on the source grid; napari has already confirmed any overwrite."""
    array = _volume_data(data, path)
    written = write_volume(
        _output_path(path), array, _writing_geometry(meta, array.shape), overwrite=True, is_label=True
    )
    return [str(written)]


def write_image(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write an Image layer (e.g. HU or a probability map) on the source grid."""
    array = _volume_data(data, path)
    written = write_volume(_output_path(path), array, _writing_geometry(meta, array.shape), overwrite=True)
    return [str(written)]


def sample_synthetic_ct() -> list[LayerData]:
    """The synthetic chest CT with its ground-truth lung and infection labels."""
    phantom = sample_ct()
    image = ct_layer(phantom.ct, name="synthetic chest CT")
    shared = {key: image[1][key] for key in ("scale", "translate", *physical_axes())}
    geometry = {GEOMETRY_KEY: phantom.ct.geometry.to_metadata()}
    truth = {
        "involvement_pct": {str(k): v for k, v in phantom.involvement_pct.items()},
        "lung_volume_ml": {str(k): v for k, v in phantom.lung_volume_ml.items()},
        "infected_ml": {str(k): v for k, v in phantom.infected_ml.items()},
    }
    lungs = {
        **shared,
        "name": "lungs (ground truth)",
        "opacity": 0.4,
        "metadata": {**geometry, **truth},
        "colormap": {**LUNG_COLORS, None: UNEXPECTED_LABEL_COLOR},
    }
    infection = {
        **shared,
        "name": "infection (ground truth)",
        "opacity": 0.6,
        "metadata": dict(geometry),
        "colormap": {**INFECTION_COLORS, None: UNEXPECTED_LABEL_COLOR},
    }
    return [image, (phantom.lungs, lungs, "labels"), (phantom.infection, infection, "labels")]
