"""Numbers as the JSON report writes them."""

from __future__ import annotations


def json_float(value: float) -> float:
    """Round to 1e-6 (mL or percent): removes float noise such as 6.5280000000000005 from
    count x voxel volume, far below one voxel and below any grade-boundary distance a lung of
    fewer than 10^8 voxels can produce, so the JSON never disagrees with its grade."""
    return round(float(value), 6)
