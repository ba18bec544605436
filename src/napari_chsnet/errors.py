"""Exception types shared by the library, the command line and the widgets.

Each carries one sentence that names the file (or setting) at fault and what to do about it;
the CLI prints it as one stderr line with exit code 2, the widgets show it as a notification.
"""


class CHSNetError(Exception):
    """Base class of the errors a user can fix (bad input, bad settings)."""


class InvalidVolumeError(CHSNetError, ValueError):
    """A file or folder that cannot be read as a CT volume (or a mask in its geometry)."""


class WeightsError(CHSNetError, ValueError):
    """A weights/checkpoint file that is missing, foreign or does not fit the model."""


class ConfigError(CHSNetError, ValueError):
    """A setting or configuration file with a wrong value."""


class OutputExistsError(CHSNetError, FileExistsError):
    """An output file exists and overwriting was not asked for."""


class OutputError(CHSNetError, OSError):
    """An output could not be written (disk full, no permission, a file where a folder should be)."""


class DeviceMemoryError(CHSNetError):
    """A run that ran out of memory (a GPU's: a smaller batch or the CPU gets it through; or the computer's)."""
