"""Training data: labelled axial slices from the layouts users and the papers have.

Every reader returns :class:`LabelledSlice` records in the package's conventions: intensity in
[0, 1] through the shared window (inference/intensity.py), anterior at the top, masks boolean.
Case ids are kept so that slices can be told apart by patient (the run summary counts cases,
messages name them).

Layouts:
* COVID-SemiSeg (``train/images/*.jpg`` + ``infection_gt/*.png``; ``unlabelled/images`` +
  ``infnet_pseudo_gt``): 8-bit slices cropped to the lungs and rotated 90° (anterior on the
  image's left); rotated back here.
* Zenodo "COVID-19 CT Lung and Infection Segmentation" (``ct_scans/``, ``lung_mask/``,
  ``infection_mask/``, NIfTI in HU): every slice that holds lung.
* HU volumes without lung masks (``covid-ct-md``): lung labels made by training/lung_labels.py.
* The plugin's saved corrections (``<case>/ct.nii.gz``, ``lungs.nii.gz``, ``infection.nii.gz``,
  optional ``edited_slices.json``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from napari_chsnet.errors import InvalidVolumeError
from napari_chsnet.inference.intensity import display8_to_hu, display8_to_unit, hu_to_unit
from napari_chsnet.inference.orientation import upright
from napari_chsnet.inference.preprocessing import CropBox, lung_crop_box
from napari_chsnet.io.volume import CTVolume

# COVID-SemiSeg slices show anterior on the image's left: turned 90° counter-clockwise from
# anterior-up (``chsnet evaluate --rotate 90``); orientation.upright turns them back.
SEMISEG_ROTATION = 90
# Nominal in-plane pixel of the cropped 8-bit slices (they carry no spacing), for the
# area thresholds of the HU-based lung labels.
SEMISEG_PIXEL_MM = 0.7
# The held-out labelled slices are a prefix of one fixed order of the 50, whatever a config's
# training seed: the model cards' 10 (3, 10, 11, 12, 28, 32, 33, 35, 44, 46) are its first 10, so a
# run with another seed, or a fine-tune's replay, can never train on them unnoticed.
SEMISEG_SPLIT_SEED = 0
SEMISEG_HELD_OUT = 10


def semiseg_validation_names(root: str | Path, count: int = SEMISEG_HELD_OUT) -> list[str]:
    """The first ``count`` labelled COVID-SemiSeg training slices in the fixed held-out order."""
    stems = sorted(semiseg_slice_names(Path(root) / "train" / "images"))
    order = np.random.default_rng(SEMISEG_SPLIT_SEED).permutation(len(stems))
    return sorted(stems[i] for i in order[:count])


def semiseg_slice_names(images: Path) -> list[str]:
    """The names of the COVID-SemiSeg slices in an ``images`` folder (``NAME.jpg``)."""
    return [p.stem for p in images.glob("*.jpg")]


def names_without_mask(names: Iterable[str], masks: Path) -> list[str]:
    """Those of ``names`` with no ``NAME.png`` in ``masks`` (such slices carry no infection label)."""
    return sorted(name for name in names if not (masks / f"{name}.png").is_file())


def listed_names(names: Sequence[str], first: int = 5) -> str:
    """``names`` for a message: the first few and how many more."""
    shown = ", ".join(names[:first])
    return shown if len(names) <= first else f"{shown} and {len(names) - first} more"


@dataclass
class LabelledSlice:
    """One axial slice: ``image`` float32 in [0, 1]; masks bool or None when unknown.

    ``infection_weight`` is the loss weight of the infection mask (1 for expert masks, lower for
    pseudo labels); ``cropped`` tells that the slice is already cropped to the lungs.
    """

    case_id: str
    image: np.ndarray
    lungs: np.ndarray | None
    infection: np.ndarray | None
    infection_weight: float = 1.0
    cropped: bool = False
    source: str = ""
    crop_box: CropBox | None = None

    def infection_box(self) -> CropBox:
        """The crop the infection stages see, as at inference: the whole image for slices that
        are already cropped, else the volume's lung box (or this slice's when unknown)."""
        if self.cropped or self.lungs is None:
            return CropBox.full(*self.image.shape)
        return self.crop_box or lung_crop_box(self.lungs)


def read_gray_image(path: Path) -> np.ndarray:
    """An image file as 8-bit grey values ``(y, x)``; InvalidVolumeError when it cannot be read."""
    return _read_image(path, keep_label_values=False)


def read_label_image(path: Path) -> np.ndarray:
    """A mask image's stored values ``(y, x)``: a palette image's indices (label PNGs such as
    COVID-SemiSeg's multiclass masks, whose colours are not their labels), a 16-bit image's integers,
    8-bit grey values otherwise; InvalidVolumeError when it cannot be read."""
    return _read_image(path, keep_label_values=True)


def _read_image(path: Path, keep_label_values: bool) -> np.ndarray:
    try:
        with Image.open(path) as image:
            if keep_label_values and (image.mode == "P" or image.mode.startswith("I")):
                return np.asarray(image)
            return np.asarray(image.convert("L"))
    except (OSError, ValueError) as exc:
        raise InvalidVolumeError(f"{path} is not a readable image ({exc})") from exc


def _semiseg_case_id(stem: str) -> str:
    # "Data-1_coronacases_org_001_10" -> "coronacases_org_001"
    match = re.match(r"(?:Data-\d+_)?(.+)_\d+$", stem)
    return match.group(1) if match else stem


def read_semiseg(
    root: str | Path,
    split: str = "train",
    *,
    names: Iterable[str] | None = None,
    with_lungs: bool = True,
    mask_folder: Path | None = None,
    pseudo_weight: float = 0.5,
) -> list[LabelledSlice]:
    """COVID-SemiSeg slices of ``split`` ("train": expert masks; "unlabelled": Inf-Net pseudo labels,
    or a teacher's from ``mask_folder``, see training/pseudo_labels.py). Pseudo labels get the loss
    weight ``pseudo_weight``, expert masks 1.

    Lung masks come from training/lung_labels.py (HU-based, with the infection mask added).
    """
    from napari_chsnet.training.lung_labels import lung_mask_of_cropped_slice

    root = Path(root) / split
    if mask_folder is None:
        mask_folder = root / ("infection_gt" if split == "train" else "infnet_pseudo_gt")
    if not (root / "images").is_dir():
        raise InvalidVolumeError(f"{root} has no images/ folder (expected the COVID-SemiSeg layout)")
    paths = sorted((root / "images").glob("*.jpg"), key=lambda p: (len(p.stem), p.stem))
    if names is not None:
        wanted = set(names)
        paths = [p for p in paths if p.stem in wanted]
    out = []
    for path in paths:
        stored = read_gray_image(path)
        pixels = upright(stored, SEMISEG_ROTATION)
        mask_path = mask_folder / f"{path.stem}.png"
        infection = (
            upright(_mask_of(mask_path, stored.shape), SEMISEG_ROTATION) > 127 if mask_path.exists() else None
        )
        lungs = None
        if with_lungs:
            lungs = lung_mask_of_cropped_slice(display8_to_hu(pixels), infection, SEMISEG_PIXEL_MM)
        out.append(
            LabelledSlice(
                case_id=_semiseg_case_id(path.stem) if split != "train" else f"semiseg_{path.stem}",
                image=np.ascontiguousarray(display8_to_unit(pixels)),
                lungs=None if lungs is None else np.ascontiguousarray(lungs),
                infection=None if infection is None else np.ascontiguousarray(infection),
                infection_weight=1.0 if split == "train" else pseudo_weight,
                cropped=True,
                source=str(path),
            )
        )
    return out


def _mask_of(path: Path, image_shape: tuple[int, ...]) -> np.ndarray:
    """The mask at ``path``, refused when its size is not its image's (``chsnet evaluate``'s rule)."""
    mask = read_gray_image(path)
    if mask.shape != image_shape:
        raise InvalidVolumeError(
            f"mask {path} is {mask.shape[1]}x{mask.shape[0]} px but its image is "
            f"{image_shape[1]}x{image_shape[0]} px; masks must match their images"
        )
    return mask


def slices_with_lung(
    lungs: np.ndarray, slice_indices: Sequence[int] | None = None, min_lung_fraction: float = 0.002
) -> list[int]:
    """The axial indices (of ``slice_indices``, default all) whose lungs (labels > 0) cover at least
    ``min_lung_fraction`` of the slice: the slices training uses."""
    indices = range(lungs.shape[0]) if slice_indices is None else slice_indices
    return [z for z in indices if np.count_nonzero(lungs[z] > 0) >= min_lung_fraction * lungs[z].size]


def slices_of_volume(
    volume: CTVolume,
    lungs: np.ndarray,
    infection: np.ndarray | None,
    case_id: str,
    slice_indices: Sequence[int] | None = None,
    min_lung_fraction: float = 0.002,
) -> list[LabelledSlice]:
    """Axial slices of a HU volume with its labels; slices without lung are skipped."""
    unit = hu_to_unit(volume.hu)
    box = lung_crop_box(lungs)  # one box per volume, as the inference pipeline crops
    out = []
    for z in slices_with_lung(lungs, slice_indices, min_lung_fraction):
        lung = lungs[z] > 0
        out.append(
            LabelledSlice(
                case_id,
                unit[z],
                lung,
                None if infection is None else infection[z] > 0,
                source=f"{volume.source}#z={z}",
                crop_box=box,
            )
        )
    return out


def read_volume_folder(root: str | Path) -> list[LabelledSlice]:
    """The Zenodo layout: ``ct_scans/X``, ``lung_mask/X``, ``infection_mask/X`` (same file names)."""
    from napari_chsnet.io.readers import read_ct
    from napari_chsnet.io.writers import read_mask

    root = Path(root)
    scans = sorted((root / "ct_scans").glob("*.nii*"))
    if not scans:
        raise InvalidVolumeError(f"{root}/ct_scans holds no NIfTI volumes (expected the Zenodo layout)")
    out = []
    for scan in scans:
        volume = read_ct(scan)
        lungs = read_mask(root / "lung_mask" / scan.name, volume.geometry, volume.shape)
        infection_path = root / "infection_mask" / scan.name
        infection = (
            read_mask(infection_path, volume.geometry, volume.shape) if infection_path.exists() else None
        )
        out += slices_of_volume(volume, lungs, infection, scan.name.split(".")[0])
    return out


def read_corrections(folder: str | Path, only_edited: bool = True) -> list[LabelledSlice]:
    """A case saved by the plugin's fine-tune panel (``ct``, ``lungs``, ``infection`` NIfTI)."""
    from napari_chsnet.io.readers import read_ct
    from napari_chsnet.io.writers import read_mask

    folder = Path(folder)
    missing = [
        name for name in ("ct.nii.gz", "lungs.nii.gz", "infection.nii.gz") if not (folder / name).exists()
    ]
    if missing:
        raise InvalidVolumeError(f"{folder} is not a saved correction: missing {', '.join(missing)}")
    volume = read_ct(folder / "ct.nii.gz")
    lungs = read_mask(folder / "lungs.nii.gz", volume.geometry, volume.shape)
    infection = read_mask(folder / "infection.nii.gz", volume.geometry, volume.shape)
    edited = None
    if only_edited and (folder / "edited_slices.json").exists():
        edited = json.loads((folder / "edited_slices.json").read_text())["slices"]
    return slices_of_volume(volume, lungs, infection, folder.name, edited)
