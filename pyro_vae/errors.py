"""Exceptions raised at pyro_vae's boundaries.

Each error names the problem and the fix, so that bad input never surfaces as a
stack trace from deep inside torch or Pyro.
"""


class PyroVAEError(Exception):
    """Base class of every error pyro_vae raises on purpose."""


class DataNotFoundError(PyroVAEError, FileNotFoundError):
    """No MNIST data could be found, downloaded or loaded from the embedded sample."""


class InvalidDataError(PyroVAEError, ValueError):
    """Data of the wrong shape, dtype or support for the chosen likelihood."""


class CheckpointError(PyroVAEError, RuntimeError):
    """A checkpoint that is missing, corrupt, or from another configuration."""
