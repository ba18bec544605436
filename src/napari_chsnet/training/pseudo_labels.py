"""Self-training: a trained model (the teacher) labels the unlabelled COVID-SemiSeg slices.

The semi-supervised scheme of issue #7. Its first round used the Inf-Net pseudo labels that ship with
COVID-SemiSeg (Inf-Net scores 0.68 Dice on the benchmark). Here a model of ours labels them instead,
end to end as at inference (lung stage, then infection stage on the whole cropped slice), and
its masks replace Inf-Net's in the next training round (``data.pseudo_teacher`` in a config).

The teacher's probability is averaged over the slice and its left-right mirror, which makes the labels
less noisy than one pass. The masks are written as 0/255 PNGs in the dataset's own orientation, the
layout of ``infnet_pseudo_gt/``, into a cache folder named after the teacher's SHA-256, with a
``teacher.json`` that says which file made them. Other rounds reuse the folder, and a person can
look at the labels beside Inf-Net's.

Our teachers' labels are biased to low recall: they leave out faint diffuse ground glass that
Inf-Net's labels hold. ``data.pseudo_union_infnet`` therefore trains on their union with Inf-Net's
shipped labels: a pixel is infected when either says so. (For the bundled CHS-Net it did not raise
the end-to-end recall; ``resources/weights/chsnet.md``.)
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from napari_chsnet.io.atomic import atomic_write
from napari_chsnet.models.checkpoints import load_checkpoint

# The teacher's infection probability from which a pixel is labelled infected (as at inference).
PSEUDO_THRESHOLD = 0.5


def teacher_folder(teacher: str | Path, cache_dir: Path) -> Path:
    """Where the masks of ``teacher`` are cached (one folder per checkpoint content)."""
    checkpoint = load_checkpoint(teacher)
    return Path(cache_dir) / f"pseudo_{checkpoint.model}_{checkpoint.sha256[:16]}"


def label_with_teacher(
    teacher: str | Path,
    images: Sequence[Path],
    cache_dir: Path,
    rotation: int,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> Path:
    """Label ``images`` (8-bit slices turned ``rotation`` degrees counter-clockwise from anterior-up) with
    the ``teacher`` checkpoint; returns the folder of ``<stem>.png`` masks (cached per teacher)."""
    import torch

    from napari_chsnet.inference.cascade import mirror_averaged
    from napari_chsnet.inference.orientation import turned, upright
    from napari_chsnet.inference.pipeline import SegmentationSettings, build_stages
    from napari_chsnet.inference.slices import segment_cropped_slice
    from napari_chsnet.training.datasets import read_gray_image
    from napari_chsnet.training.distributed import training_device

    checkpoint = load_checkpoint(teacher)
    folder = teacher_folder(teacher, cache_dir)
    missing = [path for path in images if not (folder / f"{path.stem}.png").exists()]
    if not missing:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    about = {
        "teacher": str(teacher),
        "model": checkpoint.model,
        "sha256": checkpoint.sha256,
        "threshold": PSEUDO_THRESHOLD,
        "mirror_averaged": True,
    }
    atomic_write(folder / "teacher.json", lambda path: path.write_text(json.dumps(about, indent=2)))
    # The teacher mirrors whole slices (lung stage too) itself, as the cached labels were made.
    settings = SegmentationSettings(model=checkpoint.model, weights=teacher, mirror_averaging=False)
    lung_stage, infection_stage, _ = build_stages(settings, training_device(device))

    def infection_probability(pixels: np.ndarray) -> np.ndarray:
        return segment_cropped_slice(pixels, lung_stage, infection_stage)[1]

    log(f"labelling {len(missing)} unlabelled slices with the teacher {teacher}")
    with torch.inference_mode():
        for path in missing:
            pixels = upright(read_gray_image(path), rotation)
            mask = mirror_averaged(infection_probability, pixels) >= PSEUDO_THRESHOLD
            _write_mask(turned(mask, rotation), folder, path.stem)
    return folder


def _write_mask(mask: np.ndarray, folder: Path, stem: str) -> None:
    """``folder/<stem>.png`` as a 0/255 PNG, written beside and renamed into place, so a killed run
    leaves no half-written mask that a later round would take as cached. The temporary name is unique
    to the call: under torchrun every rank labels the same slices into the same folder at once."""
    image = Image.fromarray(np.ascontiguousarray(mask.astype(np.uint8) * 255))
    atomic_write(folder / f"{stem}.png", lambda path: image.save(path, format="PNG"))


def union_with_shipped_labels(teacher_labels: Path, shipped_labels: Path, stems: Sequence[str]) -> Path:
    """A folder beside ``teacher_labels`` whose ``<stem>.png`` masks are the union of the teacher's
    and the shipped (Inf-Net) mask of the same slice (the teacher's alone where none is shipped)."""
    from napari_chsnet.training.datasets import read_gray_image

    folder = teacher_labels.with_name(f"{teacher_labels.name}_or_infnet")
    folder.mkdir(parents=True, exist_ok=True)
    for stem in stems:
        if (folder / f"{stem}.png").exists():
            continue
        union = read_gray_image(teacher_labels / f"{stem}.png") > 127
        shipped = shipped_labels / f"{stem}.png"
        if shipped.exists():
            union |= read_gray_image(shipped) > 127
        _write_mask(union, folder, stem)
    return folder
