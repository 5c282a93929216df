"""Errors a user can act on.

Every `BiobenchError` carries a message that names the file, key or id at fault and says
how to fix it. The CLI prints such messages without a traceback; anything else is a bug
and keeps its traceback.
"""


class BiobenchError(Exception):
    """An error caused by input the user controls (config, data, model names)."""


class ConfigError(BiobenchError):
    """A config file or argument is malformed, unknown or inconsistent."""


class DataError(BiobenchError):
    """A dataset on disk is missing, incomplete or corrupt."""


class BackboneError(BiobenchError):
    """A vision backbone could not be found, built or loaded."""
