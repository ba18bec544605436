"""Reusable network parts, one module per block family; each docstring opens with its paper reference."""

from .attention import AttentionGate, SpectralDepthAttention, SpectralSpatialAttention, SSDSkip
from .convolution import ConvBNReLU, DoubleConv
from .dilated import DilatedConvModule, MSBlock
from .inception import InceptionConv, ResidualInceptionBlock
from .pooling import HybridPool2d, MaxPool3x3Same
from .residual import ResidualBlock
from .separable import DepthwiseSeparableConv2d
from .spectral import GlobalSpectralPool2d, SpectralLowPass2d, SpectralPool2d, spectral_pool
from .squeeze_excitation import SqueezeExcitation

__all__ = [
    "AttentionGate",
    "ConvBNReLU",
    "DepthwiseSeparableConv2d",
    "DilatedConvModule",
    "DoubleConv",
    "GlobalSpectralPool2d",
    "HybridPool2d",
    "InceptionConv",
    "MSBlock",
    "MaxPool3x3Same",
    "ResidualBlock",
    "ResidualInceptionBlock",
    "SSDSkip",
    "SpectralDepthAttention",
    "SpectralLowPass2d",
    "SpectralPool2d",
    "SpectralSpatialAttention",
    "SqueezeExcitation",
    "spectral_pool",
]
