"""The plugin's colormaps for napari layers.

``CHSNET_JET`` is matplotlib's "jet" (the map the CHS-Net and EAMC papers and our PDF report use
for infection probability), with probabilities below ``PROBABILITY_FLOOR`` fully transparent so
that, blended additively over the CT, background and healthy lung keep their grey values.
"""

from __future__ import annotations

import numpy as np
from napari.utils.colormaps import Colormap, DirectLabelColormap

from napari_chsnet.registry import INFECTION_COLORS, LUNG_COLORS, UNEXPECTED_LABEL_COLOR

JET_NAME = "chsnet_jet"
# Same floor as the PDF report (report/rendering.py PROBABILITY_FLOOR), not imported from there
# because that module loads matplotlib.
PROBABILITY_FLOOR = 0.05

# matplotlib's _jet_data: (position, value) knots per channel.
_JET_KNOTS = {
    "red": ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
    "green": ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),
    "blue": ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)),
}
# Width of the ramp from transparent to opaque just above the floor (linear interpolation needs
# two distinct control points).
_ALPHA_RAMP = 1e-3


def _jet_colormap() -> Colormap:
    knots = sorted({pos for channel in _JET_KNOTS.values() for pos, _ in channel})
    controls = np.array(sorted({*knots, PROBABILITY_FLOOR, PROBABILITY_FLOOR + _ALPHA_RAMP}))
    rgb = [
        np.interp(controls, *zip(*_JET_KNOTS[channel], strict=True)) for channel in ("red", "green", "blue")
    ]
    alpha = (controls > PROBABILITY_FLOOR).astype(float)
    colors = np.stack([*rgb, alpha], axis=1)
    return Colormap(colors=colors, controls=controls, name=JET_NAME, display_name="JET (CHS-Net)")


CHSNET_JET = _jet_colormap()


def label_colormap(colors: dict[int, tuple[float, float, float, float]]) -> DirectLabelColormap:
    """A napari label colormap showing ``colors``, and every other value in ``UNEXPECTED_LABEL_COLOR``."""
    return DirectLabelColormap(color_dict={**colors, None: UNEXPECTED_LABEL_COLOR})


def lung_colormap() -> DirectLabelColormap:
    return label_colormap(LUNG_COLORS)


def infection_colormap() -> DirectLabelColormap:
    return label_colormap(INFECTION_COLORS)
