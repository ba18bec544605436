"""The networks of the three papers, their losses and metrics.

Importing this package imports torch; :mod:`napari_chsnet.registry` lists the models without it.
"""

from .amcnet import AMCNet
from .chsnet import CHSNet
from .eamc import EAMC
from .factory import MODEL_DEFAULTS, build_model
from .raiunet import RAIUNet
from .rdunet import RDUNet

__all__ = ["AMCNet", "CHSNet", "EAMC", "MODEL_DEFAULTS", "RAIUNet", "RDUNet", "build_model"]
