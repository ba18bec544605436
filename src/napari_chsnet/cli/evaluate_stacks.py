"""``chsnet evaluate --slice-stack``: volume files that are stacks of unrelated 2-D slices.

Some slice datasets are shipped as one volume file whose slices come from different patients: MedSeg's
"COVID-19 CT segmentation" set, from which COVID-SemiSeg's slices were cut, is ``tr_im.nii.gz`` (100
axial slices in HU) with ``tr_mask.nii.gz`` (1 ground glass, 2 consolidation, 3 pleural effusion) and
expert lung masks. Read as a scan, its slices would be post-processed in 3-D across patients and scored
as one volume. Here each slice of each file is one 2-D case, in the file's own slice order (the
file's third axis; the header's orientation is not used, as it means nothing across unrelated
slices), segmented on its own as a one-slice volume (``inference.slices.segment_hu_slice``), and
scored as ``chsnet evaluate`` scores 8-bit slices: a mean over slices and pooled over pixels, with
``--rotate`` finding or undoing a quarter turn of the slices.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from napari_chsnet.errors import InvalidVolumeError
from napari_chsnet.io.volume import Geometry


@dataclass(frozen=True)
class StackSlice:
    """One slice of a stack file: its name (``case:index``), HU, reference target and pixel size (x, y)."""

    name: str
    hu: np.ndarray
    truth: np.ndarray
    pixel_mm: tuple[float, float]


def in_file_order(array_zyx: np.ndarray, geometry: Geometry) -> tuple[np.ndarray, tuple[float, float]]:
    """A display-oriented array back on its file's own axes, and the file's in-plane pixel size (x, y)."""
    from napari_chsnet.io.orientation import image_from_display, to_source

    image = to_source(image_from_display(array_zyx, geometry), geometry.source_orientation)
    spacing = image.GetSpacing()
    return sitk.GetArrayFromImage(image), (float(spacing[0]), float(spacing[1]))


def read_stack_slices(args: argparse.Namespace) -> list[StackSlice]:
    """Every slice of every (stack, mask) pair in ``args.images`` / ``args.masks``, paired by name as
    scans are; ``args.target_labels`` keeps those labels of the masks."""
    from napari_chsnet.cli.evaluate_scans import pair_scans
    from napari_chsnet.inference.evaluation import check_labels_present, keep_labels, reference_target
    from napari_chsnet.io.readers import read_ct, refuse_unknown_intensity
    from napari_chsnet.io.writers import read_mask

    stacks = []
    for pair in pair_scans(args.images, args.masks):
        volume = read_ct(pair.scan, intensity=args.intensity, fill_missing_slices=args.fill_missing_slices)
        refuse_unknown_intensity(volume)
        reference = read_mask(pair.mask, volume.geometry, volume.shape)
        hu, pixel_mm = in_file_order(volume.hu, volume.geometry)
        stored, _ = in_file_order(reference, volume.geometry)
        stacks.append((pair, hu, stored, pixel_mm))
    check_labels_present((stored for _, _, stored, _ in stacks), args.target_labels, str(args.masks))
    slices = []
    for pair, hu, stored, pixel_mm in stacks:
        truth = reference_target(keep_labels(stored, args.target_labels))
        if args.target == "lungs" and not truth.any():
            raise InvalidVolumeError(f"mask {pair.mask} is empty: a lung mask holds the lungs")
        slices += [
            StackSlice(f"{pair.name}:{index}", hu[index], truth[index], pixel_mm) for index in range(len(hu))
        ]
    return slices
