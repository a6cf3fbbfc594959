"""Checkpoints: written atomically, read back with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors and plain Python values (never an arbitrary
pickle), tagged with a format name and version so that a foreign or newer file
is refused with a clear :class:`~pyro_vae.errors.CheckpointError`.

One format (docs/errors.md describes its keys), version 3: weights, the state of the
trainer's ``torch.optim`` optimizer, RNG states, history, the model and trainer
configuration, and, where they apply, the position inside an epoch that a signal
stopped (``"partial"``), every rank's RNG state (``"rng_ranks"``) and a guide's
param-store-only parameters (``"param_store"``). Versions 1 and 2 were development
formats of this unreleased library; they are refused with the reason.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Union

import torch

from pyro_vae.errors import CheckpointError, OutputDirError
from pyro_vae.files import atomic_write

if TYPE_CHECKING:
    from pyro_vae.models.vae import VAEBase

FORMAT = "pyro_vae.checkpoint"
#: The format version this release writes and reads.
VERSION = 3


def check_writable_dir(directory: Union[str, os.PathLike], what: str = "output directory") -> Path:
    """Create ``directory`` if need be and prove it writable with a probe file.

    Permission bits alone do not tell (root ignores them; a read-only mount does
    not), so a file is actually created and removed.

    :raises OutputDirError: naming the directory, the OS's reason and the fix.
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        reason = err.strerror or errno.errorcode.get(err.errno or 0, type(err).__name__)
        raise OutputDirError(
            f"cannot write to the {what} {str(directory)!r} ({reason}); choose a writable directory",
            settings=("checkpoint",),
        ) from None
    return directory


def save_checkpoint(state: Dict[str, Any], path: Union[str, os.PathLike]) -> None:
    """Write ``state`` to ``path`` atomically (:func:`pyro_vae.files.atomic_write`).

    The bytes go to a temporary file in the same directory, are flushed and
    fsync'ed, the file is renamed over ``path`` and the directory is fsync'ed:
    a crash (even ``kill -9`` or a power cut) leaves either the previous
    checkpoint or the new one, never a torn file; a full disk leaves the previous
    one and says so (:class:`~pyro_vae.errors.DiskFullError`). Temporary files left
    by a writer that was killed are removed first.
    """
    path = Path(path)
    payload = {"format": FORMAT, "version": VERSION, **state}
    for stale in path.parent.glob(f"{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)
    with atomic_write(path, durable=True) as tmp, open(tmp, "wb") as f:
        torch.save(payload, f)


def _why_unreadable(err: Exception) -> str:
    """torch.load's reason in a few words: its first sentence, without terminal escapes and
    without its advice to retry with ``weights_only=False`` (never safe for a file of unknown origin)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", " ".join(str(err).split()))
    if "Weights only load failed" in text:
        return (
            f"{type(err).__name__}: it is not made of tensors and plain containers only, which is "
            f"all that torch.load(weights_only=True) reads"
        )
    sentence = re.split(r"(?<=[a-z)])\. ", text, maxsplit=1)[0].rstrip(".")
    return f"{type(err).__name__}: {sentence[:200]}" if sentence else type(err).__name__


def load_checkpoint(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` onto the CPU.

    ``torch.load(weights_only=True)`` unpickles tensors and plain containers only, so
    a hostile file cannot run code.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint at {path}; train without resuming first, or give the path of the run to resume",
            settings=("checkpoint",),
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated/foreign files
        raise CheckpointError(
            f"{path} is not a readable pyro_vae checkpoint ({_why_unreadable(err)}); it may be "
            f"truncated or corrupt. Delete it to start afresh."
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a pyro_vae checkpoint (no '{FORMAT}' tag); give the path of a run "
            f"written by pyro_vae, or delete the file to start afresh",
            settings=("checkpoint",),
        )
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {state.get('version')!r}; this pyro_vae "
            f"reads version {VERSION}. Use the pyro_vae version that wrote it, or start a new run."
        )
    return state


def load_model(path: Union[str, os.PathLike]) -> "VAEBase":
    """The model a checkpoint of ``Trainer(vae)`` holds (one of
    :data:`~pyro_vae.models.registry.MODELS`): rebuilt from its ``config`` with its weights, on
    the CPU, in evaluation mode. A checkpoint of a user's own ``Trainer(model, guide)`` is
    refused: only its program can rebuild it (``load_checkpoint(path)["model"]`` holds the weights).
    """
    from pyro_vae.models.registry import MODELS, build_model  # here: models import training

    state = load_checkpoint(path)
    config = state.get("config")
    if not isinstance(config, dict) or config.get("model", "vae") not in MODELS:
        name = config.get("model") if isinstance(config, dict) else None
        raise CheckpointError(
            f"{path} holds the program {name!r}, not one of pyro_vae's models {sorted(MODELS)}; rebuild "
            f"your model and guide, then load_checkpoint(path)['model'] into their module",
            settings=("checkpoint",),
        )
    model = build_model(config)
    model.load_state_dict(state["model"])
    return model.eval()
