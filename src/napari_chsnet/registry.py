"""One source of truth for names used by the CLI, the widgets, the reports and the tests.

Imports neither torch nor Qt so that listing models or labels is instant.
"""

from __future__ import annotations

from dataclasses import dataclass

# Lung labels (product card): 1 = patient's right lung, 2 = patient's left lung.
RIGHT_LUNG = 1
LEFT_LUNG = 2
LUNG_LABEL_NAMES = {RIGHT_LUNG: "right lung", LEFT_LUNG: "left lung"}
INFECTION = 1

# Layer names the plugin creates and re-uses.
LUNGS_LAYER = "lungs"
INFECTION_LAYER = "infection"
PROBABILITY_LAYER = "infection probability"

# Label colours (RGBA): right lung blue, left lung green, infection red.
LUNG_COLORS = {0: (0.0, 0.0, 0.0, 0.0), RIGHT_LUNG: (0.2, 0.5, 1.0, 1.0), LEFT_LUNG: (0.2, 0.85, 0.3, 1.0)}
INFECTION_COLORS = {0: (0.0, 0.0, 0.0, 0.0), INFECTION: (1.0, 0.15, 0.1, 1.0)}
# Any label value outside a layer's expected set (napari's "new label" button gives max + 1, e.g. 3
# on ``lungs``): drawn in a colour no expected label uses, so it is seen at once rather than painted
# invisibly (the severity table then says what is wrong with it).
UNEXPECTED_LABEL_COLOR = (1.0, 0.0, 1.0, 1.0)  # magenta


@dataclass(frozen=True)
class ModelInfo:
    """``mirror_averaging``: the model's default for the infection stage's mirror averaging, on where
    it passed its rule with the bundled weights (the model cards give the figures).
    ``overlapping_tiles``: whether the model reads its crop in tiles at all (EAMC's patches), and then
    its default (``inference.ensemble``); None for models that read the crop whole."""

    key: str
    title: str
    paper: str
    description: str
    mirror_averaging: bool
    overlapping_tiles: bool | None = None


MODELS: dict[str, ModelInfo] = {
    "chsnet": ModelInfo(
        "chsnet",
        "CHS-Net",
        "Punn & Agarwal, CHS-Net (2021)",
        "Two cascaded RAIU-Nets: lungs, then infection on lung contour maps.",
        mirror_averaging=True,
    ),
    "eamc": ModelInfo(
        "eamc",
        "EAMC",
        "Pal Das, Mitra & Uma Shankar, EAMC (2023)",
        "Ensemble of attention multi-scale AMC-Nets on 128x128 patches, majority voting.",
        # on since round 5 passed its rule; round 3's P001 sensitivity had fallen to 0.938 (eamc.md)
        mirror_averaging=True,
        # the paper's non-overlapping patches until overlapping tiles pass their rule (eamc.md)
        overlapping_tiles=False,
    ),
    "rdunet": ModelInfo(
        "rdunet",
        "Residual Dilated U-Net",
        "Amer, Ye & Janan, Residual Dilated U-Net (2021)",
        "Residual blocks with squeeze-excitation and dilated-convolution skip modules.",
        mirror_averaging=True,
    ),
}
MODEL_KEYS = tuple(MODELS)
DEFAULT_MODEL = "chsnet"

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
