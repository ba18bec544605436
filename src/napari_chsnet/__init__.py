"""napari-chsnet: lung and COVID-19 infection segmentation of chest CT.

Importing the package pulls in neither torch nor Qt; the napari hooks, the widgets and the
command line import what they need on first use.
"""

__version__ = "0.1.0"
