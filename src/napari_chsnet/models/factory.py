"""Build a network by key from its configuration; checkpoints store ``model.config`` and rebuild through here.

``MODEL_DEFAULTS`` holds each network's paper configuration (widths chosen to match the papers' parameter
counts, see docs/models/). ``build_model(key, **config)`` lays ``config`` over a copy of the defaults.
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from ..errors import ConfigError
from .amcnet import AMCNet
from .chsnet import CHSNet
from .eamc import EAMC
from .raiunet import RAIUNet
from .rdunet import PAPER_DC_RATES, RDUNet

MODEL_CLASSES: dict[str, type[nn.Module]] = {
    "raiunet": RAIUNet,
    "chsnet": CHSNet,
    "amcnet": AMCNet,
    "eamc": EAMC,
    "rdunet": RDUNet,
}

_RAIUNET = {
    "in_channels": 1,
    "out_channels": 1,
    "base_channels": 20,
    "use_rib": True,
    "use_hybrid_pooling": True,
    "use_ssd": True,
}
_AMCNET = {"in_channels": 1, "out_channels": 1, "base_channels": 16, "dropout": 0.2}

MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "raiunet": dict(_RAIUNET),
    "chsnet": {**_RAIUNET, "stack_lung_prob": True},
    "amcnet": dict(_AMCNET),
    "eamc": {"n_members": 10, **_AMCNET},
    "rdunet": {
        "in_channels": 1,
        "out_channels": 1,
        "base_channels": 20,
        "dropout": 0.5,
        "se_reduction": 8,
        "dc_rates": [list(rates) for rates in PAPER_DC_RATES],
    },
}


def build_model(key: str, **config: Any) -> nn.Module:
    """Build network ``key`` ("raiunet", "chsnet", "amcnet", "eamc", "rdunet") with ``config`` over its defaults.

    Raises:
        ConfigError: unknown key, unknown setting, or a value the network rejects.

    Example:
        >>> model = build_model("rdunet", base_channels=8)
        >>> build_model("rdunet", **model.config).config == model.config
        True
    """
    if key not in MODEL_CLASSES:
        raise ConfigError(f"unknown model {key!r}; choose one of {', '.join(MODEL_CLASSES)}")
    defaults = MODEL_DEFAULTS[key]
    unknown = sorted(set(config) - set(defaults))
    if unknown:
        raise ConfigError(
            f"model {key!r} has no setting {', '.join(map(repr, unknown))}; its settings are {', '.join(defaults)}"
        )
    settings = {**copy.deepcopy(defaults), **config}
    try:
        return MODEL_CLASSES[key](**settings)
    except (ValueError, TypeError) as error:  # TypeError: a setting of the wrong type, e.g. text for a number
        raise ConfigError(f"model {key!r} with {settings}: {error}") from error
