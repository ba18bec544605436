"""Lung maps for CHS-Net's infection stage as it will read them: from the lung stage, not the labels.

CHS-Net's infection stage reads the lung contour map ``[CT·lungs, lungs]`` (docs/models/chsnet.md).
At inference ``lungs`` is the lung stage's post-processed mask; by default the stage trains on the
lung *labels*, which are the HU-based lungs plus the infection mask (training/lung_labels.py), so
their border follows every lesion exactly. The lung stage's mask does not: on the COVID-SemiSeg
slices it agrees with the labels at Dice 0.977 (3 % of extra border, mostly chest wall and
mediastinum, 1.6 % missed), the same on the slices it trained on and on held-out ones. Read with the
label lungs the infection stage of round 2f scores mean Dice 0.798 on the 10 validation slices, with
its own lung stage's 0.765. ``data.lung_maps: predicted`` trains it on the maps it will get.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from napari_chsnet.errors import ConfigError
from napari_chsnet.training.datasets import LabelledSlice


def with_predicted_lung_maps(
    slices: Sequence[LabelledSlice],
    checkpoint: str | Path,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> list[LabelledSlice]:
    """``slices`` with ``lungs`` replaced by what ``checkpoint``'s lung stage finds on each, post-processed
    as ``chsnet evaluate`` does (inference/slices.py); the infection labels are kept.

    Only lung-cropped 8-bit slices (COVID-SemiSeg's) are supported: a volume's lungs are found and
    post-processed in 3-D, which one slice cannot reproduce. Repeated slices (``expert_repeat``) are
    segmented once.
    """
    import torch

    from napari_chsnet.inference.intensity import unit_to_display8
    from napari_chsnet.inference.pipeline import SegmentationSettings, build_stages
    from napari_chsnet.inference.slices import segment_cropped_slice
    from napari_chsnet.training.distributed import training_device

    uncropped = sorted({s.case_id for s in slices if not s.cropped})
    if uncropped:
        raise ConfigError(
            f"data.lung_maps: predicted needs lung-cropped 2-D slices; {len(uncropped)} case(s) are not "
            f"(e.g. {uncropped[0]}): train volumes with lung_maps: labels"
        )
    settings = SegmentationSettings(model="chsnet", weights=Path(checkpoint), mirror_averaging=False)
    lung_stage, infection_stage, _ = build_stages(settings, training_device(device))
    found: dict[int, np.ndarray] = {}
    log(f"lung maps: segmenting {len({id(s) for s in slices})} slices with the lung stage of {checkpoint}")
    out = []
    with torch.inference_mode():
        for item in slices:
            if id(item) not in found:
                pixels = unit_to_display8(item.image)  # the slices hold display8_to_unit(pixels)
                found[id(item)] = segment_cropped_slice(pixels, lung_stage, infection_stage, "lungs")[0]
            out.append(dataclasses.replace(item, lungs=found[id(item)]))
    return out
