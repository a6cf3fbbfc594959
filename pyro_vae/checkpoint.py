"""Checkpoints: written atomically, read back with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors and plain Python values (never an arbitrary
pickle), tagged with a format name and version so that a foreign or newer file
is refused with a clear :class:`~pyro_vae.errors.CheckpointError`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Union

import torch

from .errors import CheckpointError

FORMAT = "pyro_vae.checkpoint"
VERSION = 1


def save_checkpoint(state: Dict[str, Any], path: Union[str, os.PathLike]) -> None:
    """Write ``state`` to ``path`` atomically.

    The bytes go to a temporary file in the same directory, are flushed and
    fsync'ed, and the file is renamed over ``path``: a crash leaves either the
    previous checkpoint or the new one, never a torn file.
    """
    path = Path(path)
    payload = {"format": FORMAT, "version": VERSION, **state}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` onto the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint at {path}; train without --resume first, or point --out at "
            f"the run to resume"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated/foreign files
        raise CheckpointError(
            f"{path} is not a readable pyro_vae checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'unreadable'}); it may be truncated "
            f"or corrupt. Delete it to start afresh."
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a pyro_vae checkpoint (no '{FORMAT}' tag)")
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {state.get('version')!r}; this pyro_vae "
            f"reads version {VERSION}. Use the pyro_vae release that wrote it."
        )
    return state
