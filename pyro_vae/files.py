"""Every file a run writes, written atomically, and a full disk said in one line.

:func:`atomic_write` hands the writer a temporary file beside the target and renames it over
the target only once it is whole, so a reader -- or a run killed mid-write -- sees the last
whole file or none, never half of one. When the disk (or a quota) fills, the temporary file is
removed, the target stays as it was, and :class:`~pyro_vae.errors.DiskFullError` names the file
and the space left. Checkpoints (:func:`pyro_vae.training.checkpoint.save_checkpoint`), the metrics file,
every figure and the explorer page are written this way.
"""

from __future__ import annotations

import errno
import math
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Union

from pyro_vae.errors import DiskFullError

PathLike = Union[str, os.PathLike]
#: The errors that mean "no room": a full device, or a full quota.
FULL = (errno.ENOSPC, errno.EDQUOT)
_UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB")
_UMASK = os.umask(0o022)  # read the process's umask (it can only be read by setting it) ...
os.umask(_UMASK)  # ... and put it back at once


def free_space(directory: PathLike) -> str:
    """The space left on the device holding ``directory``, in words ("12.0 KiB free")."""
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return "free space unknown"
    power = min(int(math.log(free, 1024)) if free else 0, len(_UNITS) - 1)
    return f"{free} bytes free" if power == 0 else f"{free / 1024**power:.1f} {_UNITS[power]} free"


def fsync_dir(directory: PathLike) -> None:
    """Make a rename in ``directory`` durable (POSIX; a no-op where directories cannot be opened)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_write(path: PathLike, durable: bool = False) -> Iterator[str]:
    """Yield the name of a temporary file beside ``path`` to write; on leaving, rename it over
    ``path``. On any error the temporary file is removed and ``path`` is untouched.

    :param durable: fsync the file and its directory, so that even a power cut leaves the old
        file or the new one (checkpoints).
    :raises DiskFullError: the device or quota filled while writing.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # the mode open() would give, not mkstemp's 0600
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(err):
            raise DiskFullError(
                f"could not write {path}: no space left on the device ({free_space(path.parent)}); "
                f"free some space or choose another output directory",
                path=str(path),
            ) from None
        raise
    if durable:
        fsync_dir(path.parent)


def is_disk_full(err: Optional[BaseException]) -> bool:
    """Whether ``err``, or an error it was raised from, is the device or a quota filling up."""
    while err is not None:
        if isinstance(err, DiskFullError) or (isinstance(err, OSError) and err.errno in FULL):
            return True
        err = err.__cause__ or err.__context__
    return False


def write_text(path: PathLike, text: str) -> str:
    """Write ``text`` to ``path`` atomically (UTF-8); returns ``path`` as a string."""
    with atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    return str(path)


def save_figure(fig: Any, path: PathLike, **savefig: Any) -> str:
    """``fig.savefig(path, ...)`` atomically, in the format of ``path``'s extension."""
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", **savefig)
    return str(path)
