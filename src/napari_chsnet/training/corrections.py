"""Corrected cases: what a fine-tune trains on, and what later fine-tunes replay.

A :class:`CorrectedCase` is a CT with the radiologist's lung labels and infection mask and,
when known, the axial slices that were edited. The fine-tune panel saves each case into the
user's corrections folder (``<case>/ct.nii.gz``, ``lungs.nii.gz``, ``infection.nii.gz``,
``edited_slices.json``: the layout :func:`~napari_chsnet.training.datasets.read_corrections`
reads) so that later fine-tunes can mix it in as replay. ``edited_slices.json`` also records the
CT's fingerprint, so a second scan of the same name never replaces the first one's correction, and
the same scan under another name (a renamed layer) updates its own correction instead of starting a
second one. Saving a CT's correction again merges it into the saved one: the radiologist's earlier
edits stay on the slices not edited this time (see :func:`save_correction`). A CT on a skewed grid (a
gantry tilt kept with its shear in an .mha/.nrrd), which NIfTI cannot hold, is saved on the nearest
perpendicular grid (:func:`correction_geometry`): training needs only the voxels.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from napari_chsnet.errors import InvalidVolumeError
from napari_chsnet.inference.versions import corrections_dir
from napari_chsnet.io.atomic import replace_folder
from napari_chsnet.io.volume import CTVolume, Geometry
from napari_chsnet.registry import LEFT_LUNG, RIGHT_LUNG
from napari_chsnet.training.datasets import LabelledSlice, slices_of_volume, slices_with_lung

CORRECTION_FILES = ("ct.nii.gz", "lungs.nii.gz", "infection.nii.gz")
EDITED_SLICES_FILE = "edited_slices.json"
MIN_LUNG_FRACTION = 0.002  # a slice whose lungs cover less of it is not trained on


@dataclass
class CorrectedCase:
    """A CT and its corrected masks on the CT's grid.

    Attributes:
        ct: the CT volume (HU, display orientation).
        lungs: ``(z, y, x)`` lung labels (1 right, 2 left; any non-zero counts as lung).
        infection: ``(z, y, x)`` infection mask.
        name: case id (used in version.json and as the saved folder's name).
        edited_slices: axial indices the user edited; ``None`` when unknown.
        lungs_edited: whether the lung labels were corrected too (CHS-Net may then tune its lung stage).
        infection_edited: whether the infection mask was corrected; ``None`` when unknown. A case
            whose lungs alone were corrected teaches the infection stage nothing new, which a
            fine-tune that does not tune the lung stage says.
    """

    ct: CTVolume
    lungs: np.ndarray
    infection: np.ndarray
    name: str
    edited_slices: tuple[int, ...] | None = None
    lungs_edited: bool = False
    infection_edited: bool | None = None

    def __post_init__(self) -> None:
        for label, mask in (("lungs", self.lungs), ("infection", self.infection)):
            if tuple(mask.shape) != self.ct.shape:
                raise InvalidVolumeError(
                    f"case {self.name}: the {label} mask has shape {tuple(mask.shape)} but the CT has {self.ct.shape}; "
                    "masks must lie on the CT's voxel grid"
                )
        self._check_mask_values()
        if self.edited_slices is not None:
            bad = [z for z in self.edited_slices if not 0 <= z < self.ct.shape[0]]
            if bad:
                raise InvalidVolumeError(
                    f"case {self.name}: edited slices {bad} lie outside 0..{self.ct.shape[0] - 1}"
                )
            self.edited_slices = tuple(sorted({int(z) for z in self.edited_slices}))

    def _check_mask_values(self) -> None:
        """Refuse masks that cannot be what they claim: lung labels other than 1 (right) and 2 (left),
        or an infection mask lying mostly outside the lungs (the two masks swapped, or one drawn on
        another scan), which fine-tuning would learn as truth."""
        if self.lungs.size and (self.lungs.min() < 0 or self.lungs.max() > LEFT_LUNG):
            labels = [int(v) for v in np.unique(self.lungs) if v < 0 or v > LEFT_LUNG]
            raise InvalidVolumeError(
                f"case {self.name}: the lungs mask holds label(s) {', '.join(map(str, labels[:5]))}; lungs are "
                f"{RIGHT_LUNG} (right) and {LEFT_LUNG} (left), 0 elsewhere: is it the lung mask?"
            )
        infected = np.count_nonzero(self.infection)
        if infected:
            outside = infected - np.count_nonzero(self.infection[self.lungs > 0])
            if outside > 0.5 * infected:
                raise InvalidVolumeError(
                    f"case {self.name}: {100 * outside / infected:.0f} % of the infection mask lies outside the lungs; "
                    "are the lungs and infection masks swapped, or drawn on another scan?"
                )

    @classmethod
    def from_files(
        cls, image: str | Path, lungs: str | Path, infection: str | Path, name: str | None = None
    ) -> CorrectedCase:
        """Read a CT (any format the readers take) and its two masks (on the CT's grid)."""
        from napari_chsnet.io.readers import read_ct
        from napari_chsnet.io.writers import read_mask

        volume = read_ct(image)
        return cls(
            volume,
            read_mask(lungs, volume.geometry, volume.shape),
            read_mask(infection, volume.geometry, volume.shape),
            name or case_name_of(image),
        )

    @classmethod
    def from_folder(cls, folder: str | Path) -> CorrectedCase:
        """A case saved by :func:`save_correction`."""
        folder = Path(folder)
        missing = [name for name in CORRECTION_FILES if not (folder / name).is_file()]
        if missing:
            raise InvalidVolumeError(f"{folder} is not a saved correction: missing {', '.join(missing)}")
        case = cls.from_files(*(folder / name for name in CORRECTION_FILES), name=folder.name)
        if (folder / EDITED_SLICES_FILE).is_file():
            info = json.loads((folder / EDITED_SLICES_FILE).read_text())
            case.edited_slices, case.lungs_edited, case.infection_edited = _edits_recorded(info)
        return case

    def labelled_slices(self, only_edited: bool) -> list[LabelledSlice]:
        """Slices with lung of this case (only the edited ones when asked and known)."""
        indices = self.edited_slices if only_edited and self.edited_slices else None
        return slices_of_volume(self.ct, self.lungs, self.infection, self.name, indices, MIN_LUNG_FRACTION)

    def training_slice_indices(self, only_edited: bool) -> list[int]:
        """The axial indices :meth:`labelled_slices` would give, without building the slices (to
        check a case before saving or training it)."""
        indices = self.edited_slices if only_edited and self.edited_slices else None
        return slices_with_lung(self.lungs, indices, MIN_LUNG_FRACTION)


def case_name_of(path: str | Path) -> str:
    """``/data/P001_ct.nii.gz`` -> ``P001_ct``; a DICOM folder -> its name."""
    name = Path(path).name
    for suffix in (".nii.gz", ".nii", ".mha", ".mhd", ".nrrd", ".nhdr", ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "case"


def ct_sha256(hu: np.ndarray) -> str:
    """A fingerprint of a CT's voxels (shape, dtype and bytes): two scans that share a file name
    (every patient's ``ct.nii.gz``) are told apart by it."""
    array = np.ascontiguousarray(hu)
    digest = hashlib.sha256(f"{array.shape}{array.dtype.str}".encode())
    digest.update(array)
    return digest.hexdigest()


def _saved_ct_sha256(folder: Path) -> str | None:
    """The CT fingerprint a saved correction records (None for folders saved before it was)."""
    try:
        return json.loads((folder / EDITED_SLICES_FILE).read_text()).get("ct_sha256")
    except (OSError, ValueError, AttributeError):
        return None


def _folders(root: Path) -> list[Path]:
    """The saved-correction folders of ``root`` (not the hidden ones being written), by name."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _folder_for(root: Path, name: str, fingerprint: str) -> Path:
    """The folder of this CT's correction: the one among ``name``, ``name-2``, … that holds the
    same CT, else any folder holding it (the CT saved under another name, e.g. a renamed layer),
    else the first free one of ``name``, ``name-2``, …. A folder holding another CT (or one saved
    without a fingerprint, so unknown) is never chosen: a correction is never replaced by another
    scan's."""
    numbered = re.compile(rf"{re.escape(name)}-\d+")
    candidates = [root / name, *sorted(p for p in root.glob(f"{name}-*") if numbered.fullmatch(p.name))]
    same = next((p for p in candidates if p.is_dir() and _saved_ct_sha256(p) == fingerprint), None)
    if same is None:
        same = next((p for p in _folders(root) if _saved_ct_sha256(p) == fingerprint), None)
    if same is not None:
        return same
    return next(
        folder
        for folder in (root / (name if n == 1 else f"{name}-{n}") for n in itertools.count(1))
        if not folder.exists()
    )


@dataclass(frozen=True)
class _Saved:
    """What a correction folder holds, on the CT's grid."""

    lungs: np.ndarray
    infection: np.ndarray
    edited_slices: tuple[int, ...] | None
    lungs_edited: bool
    infection_edited: bool | None


def _read_saved(folder: Path, shape: tuple[int, ...]) -> _Saved | None:
    """The saved correction of the same CT (same fingerprint, so the same voxels in display
    orientation); None when it cannot be read whole (then there is nothing to keep)."""
    from napari_chsnet.io.readers import read_image_file

    try:
        info = json.loads((folder / EDITED_SLICES_FILE).read_text())
        lungs = np.asarray(read_image_file(folder / "lungs.nii.gz").hu)
        infection = np.asarray(read_image_file(folder / "infection.nii.gz").hu)
    except (OSError, ValueError, RuntimeError):  # CHSNetError of the readers is a ValueError
        return None
    if lungs.shape != tuple(shape) or infection.shape != tuple(shape) or not isinstance(info, dict):
        return None
    return _Saved(lungs.astype(np.uint8), (infection > 0).astype(np.uint8), *_edits_recorded(info))


def _edits_recorded(info: dict[str, Any]) -> tuple[tuple[int, ...] | None, bool, bool | None]:
    """What ``edited_slices.json`` says was edited: the slices (None: unknown), whether the lungs and
    whether the infection were (None: unknown, as in folders saved before it was recorded)."""
    infection_edited = info.get("infection_edited")
    return (
        tuple(int(z) for z in info.get("slices", ())) or None,
        bool(info.get("lungs_edited", False)),
        None if infection_edited is None else bool(infection_edited),
    )


def _merged(case: CorrectedCase, saved: _Saved | None) -> _Saved:
    """``case`` merged into its saved correction: the union of the edited slices; on the slices
    edited before and not this time the saved labels (the radiologist's earlier edits, which a new
    segmentation there would otherwise replace); this case's state everywhere else. Unknown edited
    slices (None) mean every slice: a case without them replaces the saved one whole, and a saved
    one without them keeps its labels wherever this case was not edited."""
    new = _Saved(
        case.lungs.astype(np.uint8),
        (case.infection > 0).astype(np.uint8),
        case.edited_slices,
        case.lungs_edited,
        case.infection_edited,
    )
    if saved is None or case.edited_slices is None:
        return new
    edited_now = set(case.edited_slices)
    if saved.edited_slices is None:
        keep = [z for z in range(case.ct.shape[0]) if z not in edited_now]
        union = None
    else:
        keep = sorted(set(saved.edited_slices) - edited_now)
        union = tuple(sorted(edited_now | set(saved.edited_slices)))
    lungs, infection = new.lungs, new.infection
    if keep:
        lungs, infection = lungs.copy(), infection.copy()  # never write into the caller's arrays
        lungs[keep] = saved.lungs[keep]
        infection[keep] = saved.infection[keep]
    flags = (saved.infection_edited, case.infection_edited)
    infection_edited = True if True in flags else (None if None in flags else False)
    return _Saved(lungs, infection, union, saved.lungs_edited or case.lungs_edited, infection_edited)


def correction_geometry(geometry: Geometry) -> tuple[Geometry, dict[str, Any] | None]:
    """The grid a correction is saved on, and what ``edited_slices.json`` records of a change to it.

    The files are NIfTI, which cannot hold a skewed grid (``writers.check_writable``): a skewed CT's
    correction is saved with the nearest perpendicular unit vectors in place of its axes (CT and masks
    alike, so they reopen on one grid; the voxels, and so the CT's fingerprint, are unchanged) and the
    record says so (``{"skew_deg": …, "direction": the CT's own}``). A direction whose cosines are only
    rounded (``orientation.straightened``) is saved straightened too, without a record (the CT's masks
    reopen on it: ``read_mask`` compares directions straightened); an orthonormal grid is kept (None).
    """
    from napari_chsnet.io.orientation import is_orthonormal, nearest_orthonormal
    from napari_chsnet.io.writers import grid_skew_deg

    if is_orthonormal(geometry.direction):
        return geometry, None
    matrix = np.reshape(np.asarray(geometry.direction, dtype=float), (3, 3))
    straight = tuple(float(v) for v in nearest_orthonormal(matrix).ravel())
    skew = grid_skew_deg(geometry)
    if skew is None:
        return replace(geometry, direction=straight), None
    record = {"skew_deg": round(skew, 3), "direction": [float(v) for v in geometry.direction]}
    return replace(geometry, direction=straight, nifti=None), record


def save_correction(case: CorrectedCase, root: Path | None = None, *, overwrite: bool = True) -> Path:
    """Write ``case`` into ``root`` (default: the user's corrections folder) as ``<name>/``.

    The folder is found by the CT's fingerprint written in ``edited_slices.json``: saving the same
    CT again (under any name) updates its folder (``overwrite=False`` refuses instead); another CT
    of the same name goes to ``<name>-2`` (``-3``, …). An update merges (:func:`_merged`): the
    edited slices are the union of the saved ones and ``case``'s, and the slices edited before but
    not in ``case`` keep their saved labels, so re-segmenting and correcting other slices never
    loses the earlier corrections. Written to a temporary folder and renamed, so a half-written
    case is never replayed and a failed save leaves the saved one as it was. A CT on a skewed grid is
    saved on the nearest perpendicular one (:func:`correction_geometry`; ``grid_straightened`` in
    ``edited_slices.json``).
    """
    from napari_chsnet.io.writers import write_volume

    root = corrections_dir() if root is None else Path(root)
    fingerprint = ct_sha256(case.ct.hu)
    target = _folder_for(root, _safe_name(case.name), fingerprint)
    if target.exists() and not overwrite:
        raise InvalidVolumeError(f"this CT's correction is already saved in {target}")
    merged = _merged(case, _read_saved(target, case.ct.shape) if target.exists() else None)
    geometry, straightened = correction_geometry(case.ct.geometry)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{target.name}."))
    try:
        write_volume(staging / "ct.nii.gz", case.ct.hu, geometry)
        write_volume(staging / "lungs.nii.gz", merged.lungs, geometry, is_label=True)
        write_volume(staging / "infection.nii.gz", merged.infection, geometry, is_label=True)
        edited: dict[str, Any] = {
            "slices": list(merged.edited_slices or ()),
            "lungs_edited": merged.lungs_edited,
            "infection_edited": merged.infection_edited,
            "ct_sha256": fingerprint,
        }
        if straightened is not None:
            edited["grid_straightened"] = straightened
        (staging / EDITED_SLICES_FILE).write_text(json.dumps(edited))
        replace_folder(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def saved_corrections(
    root: Path | None = None, exclude: Sequence[str] = (), exclude_ct: Sequence[str] = ()
) -> list[Path]:
    """Folders of saved corrections (complete ones only), sorted by name, without those named in
    ``exclude`` (case names or folder names) and those of the CTs whose :func:`ct_sha256` is in
    ``exclude_ct`` (whatever their name)."""
    root = corrections_dir() if root is None else Path(root)
    skip = set(exclude) | {_safe_name(name) for name in exclude}  # folders are named by _safe_name
    skip_ct = set(exclude_ct)
    return [
        p
        for p in _folders(root)
        if p.name not in skip
        and all((p / f).is_file() for f in CORRECTION_FILES)
        and not (skip_ct and _saved_ct_sha256(p) in skip_ct)
    ]
