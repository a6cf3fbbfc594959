"""Exceptions raised at pyro_vae's boundaries.

Each error names the problem and the fix, so that bad input never surfaces as a
stack trace from deep inside torch or Pyro. Each also subclasses the builtin a
caller would catch without knowing pyro_vae (``ValueError``, ``OSError``, ...).
docs/errors.md lists every case with the message it prints.
"""

from __future__ import annotations

import math
import numbers
import re
import signal
from typing import Any, Optional, Sequence, Tuple


class PyroVAEError(Exception):
    """Base class of every error pyro_vae raises on purpose.

    The message names settings (``lr``, ``hidden_dims``), never a command-line flag; the
    settings a fix involves are also in :attr:`settings`, so that a front end can name
    its own flags for them (``examples/mnist_svi.py`` does). The message stays one line
    even when raised inside a Pyro trace: Pyro re-raises a ``ValueError`` from a traced
    program with the trace's shape table appended, which this drops.
    """

    def __init__(self, *args: Any, settings: Sequence[str] = ()) -> None:
        if args and isinstance(args[0], str):
            args = (re.split(r"\n\s*Trace Shapes:", args[0], maxsplit=1)[0], *args[1:])
        super().__init__(*args)
        #: the settings the fix involves, e.g. ``("lr", "clip_norm")``
        self.settings = tuple(settings)


class DataNotFoundError(PyroVAEError, FileNotFoundError):
    """No MNIST data could be found, downloaded or loaded from the embedded sample."""


class InvalidDataError(PyroVAEError, ValueError):
    """Data of the wrong shape, dtype or support for the chosen likelihood."""


class ConfigError(PyroVAEError, ValueError):
    """A setting of the wrong type, out of range, or an unknown name (the message lists the valid ones)."""


class CheckpointError(PyroVAEError, RuntimeError):
    """A checkpoint that is missing, corrupt, or from another configuration."""


class OutputDirError(PyroVAEError, OSError):
    """An output directory (checkpoints, figures, metrics) that cannot be created or written."""


class DiskFullError(OutputDirError):
    """The device or a quota filled while a file was written; the file is as it was before and
    no temporary file is left (:mod:`pyro_vae.files`).

    :ivar path: the file that could not be written.
    """

    def __init__(self, message: str, path: str, checkpoint_told: bool = False) -> None:
        super().__init__(message, settings=("checkpoint",))
        self.path = path
        self.checkpoint_told = checkpoint_told

    def with_checkpoint(self, last_checkpoint: Optional[Tuple[str, int, int]]) -> "DiskFullError":
        """This error, saying where the last good checkpoint is, ``(path, epoch, step)``, or that there is none."""
        if self.checkpoint_told:
            return self
        if last_checkpoint is None:
            where = "no checkpoint was written before it"
        else:
            path, epoch, step = last_checkpoint
            when = f"epoch {epoch + 1}, step {step}" if step else f"epoch {epoch}"
            where = f"the last good checkpoint, {path} ({when}), is intact: resume from it"
        return DiskFullError(f"{self.args[0]}; {where}", self.path, checkpoint_told=True)


class NonFiniteError(PyroVAEError, FloatingPointError):
    """The training loss or a gradient became NaN or infinite; training stopped before the
    optimizer applied it, and no checkpoint was written after the last good one.

    :ivar epoch: the epoch (1-based) of the offending step.
    :ivar step: the step within that epoch (0-based).
    :ivar term: ``"reconstruction"``, ``"KL"``, ``"reconstruction and KL"`` or ``None`` when
        both terms re-evaluated finite on the batch.
    :ivar checkpoint: path of the last good checkpoint, or ``None``.
    :ivar checkpoint_epoch: the epoch that checkpoint holds.
    """

    def __init__(
        self,
        message: str,
        *,
        epoch: int,
        step: int,
        term: Optional[str] = None,
        checkpoint: Optional[str] = None,
        checkpoint_epoch: Optional[int] = None,
        settings: Sequence[str] = (),
    ) -> None:
        super().__init__(message, settings=settings)
        self.epoch, self.step, self.term = epoch, step, term
        self.checkpoint, self.checkpoint_epoch = checkpoint, checkpoint_epoch


class TrainingInterrupted(PyroVAEError):
    """SIGINT or SIGTERM stopped :meth:`pyro_vae.training.trainer.Trainer.fit` after a complete step.

    The trainer wrote a checkpoint (mid-epoch if need be) from which a resumed run
    continues bit-identically. A command line exits with :attr:`~pyro_vae.errors.TrainingInterrupted.exit_code`,
    the shell's ``128 + signal number`` (130 for SIGINT, 143 for SIGTERM).

    :ivar signum: the signal received.
    :ivar epoch: the epoch in progress (1-based).
    :ivar step: steps of that epoch already taken (0: the epoch has not started).
    :ivar checkpoint: where the state was written, or ``None`` if ``fit`` had no checkpoint path.
    """

    def __init__(self, signum: int, epoch: int, step: int, checkpoint: Optional[str]) -> None:
        self.signum, self.epoch, self.step, self.checkpoint = signum, epoch, step, checkpoint
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        where = f"interrupted ({name}) at epoch {epoch}, step {step}"
        if checkpoint is None:
            super().__init__(
                f"{where}; no checkpoint path was given, so the state is only in memory: call fit again to continue"
            )
        else:
            super().__init__(
                f"{where}; checkpoint at {checkpoint}: continue with Trainer.resume({str(checkpoint)!r}) and fit"
            )

    @property
    def exit_code(self) -> int:
        """The command line's exit code, ``128 + signal number``."""
        return 128 + int(self.signum)


def check_positive(name: str, value: Any, kind: type = int, example: Any = None) -> Any:
    """Return ``value`` if it is a positive ``int`` (or finite positive number, for
    ``kind=float``), else raise :class:`ConfigError` naming the setting and a valid value.

    ``bool`` is refused although it is an ``int``: ``batch_size=True`` is a mistake.
    """
    numeric, word = ((int, float), "number") if kind is float else ((int,), "integer")
    example = example if example is not None else (1e-3 if kind is float else 128)
    fix = f"e.g. {name}={example!r}"
    if isinstance(value, bool) or not isinstance(value, numeric):
        raise ConfigError(
            f"{name} must be a positive {word}, got {value!r} of type {type(value).__name__}; "
            f"pass a{'' if kind is float else 'n'} {kind.__name__}, {fix}",
            settings=(name,),
        )
    if not value > 0 or (kind is float and not math.isfinite(value)):
        raise ConfigError(f"{name} must be a positive {word}, got {value!r}; pass {fix}", settings=(name,))
    return value


def check_count(name: str, value: Any, example: int, zero: str = "none", unit: str = "") -> int:
    """Return ``value`` if it is an integer >= 0 (a number of ``unit``, ``0`` meaning ``zero``),
    else raise :class:`ConfigError` naming the setting, a valid value and what 0 means."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        what = f"a whole number of {unit}" if unit else "an integer"
        raise ConfigError(
            f"{name} must be {what} >= 0, got {value!r}; pass e.g. {name}={example!r}, or 0 for {zero}",
            settings=(name,),
        )
    return int(value)


def check_seed(name: str, value: Any) -> int:
    """Return ``value`` if it is an integer in [0, 2**32 - 1], the seeds NumPy (and so
    ``pyro.set_rng_seed``) accepts, else raise :class:`ConfigError` naming the setting."""
    # ignore: typeshed's numbers.Integral declares no __ge__, which Python calls for 0 <= value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < 2**32:  # type: ignore[operator]
        raise ConfigError(
            f"{name} must be an integer in [0, 2**32 - 1], got {value!r}; pass e.g. {name}=0", settings=(name,)
        )
    return int(value)
