"""Refusing volumes that would not fit in memory, from the header alone, before reading pixels."""

from __future__ import annotations

import os

from napari_chsnet.errors import InvalidVolumeError

# Reading holds the file's pixels, the display-oriented copy and the HU array at once.
_COPIES_WHILE_READING = 3
# Segmenting holds, beside the CT, the lung mask, the probability map, the masks and the lung
# post-processing's transients (labels, watershed markers and distances): its peak was 19 bytes a
# voxel over the CT on P001 repeated to 592 slices (inference/postprocess.py, 2026-12-05).
SEGMENTATION_BYTES_PER_VOXEL = 20


def available_memory_bytes() -> int | None:
    """Memory the kernel can give without swapping (MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_fits_in_memory(source: str, n_voxels: int, bytes_per_voxel: int) -> None:
    """Raise InvalidVolumeError if reading ``n_voxels`` would exhaust the available memory."""
    needed = n_voxels * bytes_per_voxel * _COPIES_WHILE_READING
    available = available_memory_bytes()
    if available is not None and needed > available:
        raise InvalidVolumeError(
            f"{source}: the volume holds {n_voxels:,} voxels and needs about {needed / 2**30:.1f} GiB to "
            f"load, but only {available / 2**30:.1f} GiB of memory is available; crop or downsample it first."
        )


def check_segmentation_fits(source: str, n_voxels: int) -> None:
    """Raise InvalidVolumeError if segmenting ``n_voxels`` would exhaust the available memory: found
    before the networks run, not as the process being killed minutes later (in napari, the viewer
    with the user's unsaved work)."""
    needed = n_voxels * SEGMENTATION_BYTES_PER_VOXEL
    available = available_memory_bytes()
    if available is not None and needed > available:
        raise InvalidVolumeError(
            f"{source}: segmenting its {n_voxels:,} voxels needs about {needed / 2**30:.1f} GiB of memory, but "
            f"only {available / 2**30:.1f} GiB is available; close other programs, or crop or downsample the "
            "scan (e.g. to thicker slices) first."
        )
