"""Your data, from wherever it is: one function, :func:`load_data`, for every source.

``load_data(source)`` reads

- ``"mnist"`` (the look-up of :func:`pyro_vae.data.images.load_mnist`: directory, cache,
  download, embedded sample), ``"fashion_mnist"`` and ``"kmnist"`` (torchvision's, downloaded into
  ``data_dir`` where the internet allows);
- ``"digits"`` and ``"wine"``: scikit-learn's 8x8 digits (1,797 grey images) and its wine table
  (178 wines, 13 features, standardized), both shipped inside scikit-learn: offline;
- a path: a ``.npy``, ``.npz`` or ``.pt`` array (rows are datapoints; an ``.npz`` or ``.pt``
  dict may add labels ``y``), a ``.csv`` of numbers (a header row of names is recognized; a
  ``label_column`` is taken out as the labels), or a folder of images of one size, grey or colour
  (its sub-folders, if any, are the classes).

It returns :class:`Data`: the training and held-out rows as float tensors ``[N, D]``, the labels
where there are any, and the *shape* of one datapoint -- ``(channels, height, width)`` for images,
``(features,)`` for a table -- which the figures and the explorer read. Sources without a split of
their own are split with a seeded permutation, ``test_fraction`` held out. Every problem with a
file is one line naming the file, the row or column, and the fix.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

import numpy as np
import torch

from pyro_vae.data.images import check_finite, load_mnist
from pyro_vae.errors import ConfigError, DataNotFoundError, InvalidDataError

#: Image files a folder source reads.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff")
#: The named sources (a path is the other kind).
NAMED = ("mnist", "fashion_mnist", "kmnist", "digits", "wine")


@dataclass
class Data:
    """A data set as the models read it: rows ``[N, D]`` of float features or pixels."""

    train: torch.Tensor
    test: torch.Tensor
    train_labels: Optional[torch.Tensor]
    test_labels: Optional[torch.Tensor]
    #: one datapoint's shape: ``(channels, height, width)`` for images, ``(features,)`` for a table
    shape: Tuple[int, ...]
    #: where the data came from, for the log and the record
    source: str
    #: a table's column names, where a header gave them
    feature_names: Optional[List[str]] = None

    @property
    def is_images(self) -> bool:
        return len(self.shape) == 3

    @property
    def x_dim(self) -> int:
        return math.prod(self.shape)

    @property
    def value_kind(self) -> str:
        """``"binary"``, ``"counts"``, ``"unit"`` (in [0, 1]) or ``"real"``: what the values are,
        for choosing a likelihood (:func:`suggested_likelihood`)."""
        x = self.train
        if bool(((x == 0) | (x == 1)).all()):
            return "binary"
        if bool((x >= 0).all()) and bool((x == x.round()).all()):
            return "counts"
        if bool((x >= 0).all()) and bool((x <= 1).all()):
            return "unit"
        return "real"


def suggested_likelihood(data: Data) -> str:
    """A likelihood that fits the values: Bernoulli for binary ones and for images in [0, 1]
    (binarized afresh every epoch, as MNIST is), continuous Bernoulli for a table's values in
    [0, 1], negative binomial for counts, Normal for real numbers."""
    kind = data.value_kind
    if kind == "unit":
        return "bernoulli" if data.is_images else "continuous_bernoulli"
    return {"binary": "bernoulli", "counts": "negative_binomial", "real": "normal"}[kind]


def _split(
    x: torch.Tensor,
    y: Optional[torch.Tensor],
    shape: Tuple[int, ...],
    source: str,
    test_fraction: float,
    seed: int,
    names: Optional[List[str]] = None,
) -> Data:
    if not 0 < test_fraction < 1:
        raise ConfigError(
            f"test_fraction must be between 0 and 1, got {test_fraction!r}; pass e.g. 0.1", settings=("test_fraction",)
        )
    n = len(x)
    n_test = max(1, round(n * test_fraction))
    if n - n_test < 1:
        raise InvalidDataError(
            f"{source} holds {n} row(s): too few to hold {n_test} out for testing and train on "
            f"the rest; give at least 2 rows"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    train, test = order[:-n_test], order[-n_test:]
    return Data(
        x[train], x[test], None if y is None else y[train], None if y is None else y[test], shape, source, names
    )


def _check_values(x: torch.Tensor, where: str) -> torch.Tensor:
    check_finite(x, where, value="value", rows="rows")
    return x


def _as_rows(array: np.ndarray, where: str) -> Tuple[torch.Tensor, Tuple[int, ...]]:
    """An array of datapoints as float rows ``[N, D]`` and one datapoint's shape."""
    if array.dtype.kind not in "biuf":
        raise InvalidDataError(f"{where} holds {array.dtype} values; save numbers (e.g. np.float32)")
    if array.ndim < 2 or array.shape[0] == 0:
        raise InvalidDataError(
            f"{where} has shape {array.shape}; it must hold at least one row, [N, features] or "
            f"[N, height, width] images"
        )
    scaled = array.astype(np.float32) / 255 if array.dtype == np.uint8 else array.astype(np.float32)
    x = torch.from_numpy(np.ascontiguousarray(scaled))
    if x.dim() == 2:
        shape: Tuple[int, ...] = (x.shape[1],)
    elif x.dim() == 3:
        shape = (1, x.shape[1], x.shape[2])
    elif x.dim() == 4 and x.shape[1] in (1, 3):
        shape = tuple(x.shape[1:])
    elif x.dim() == 4 and x.shape[3] in (1, 3):  # channels last
        x = x.permute(0, 3, 1, 2)
        shape = tuple(x.shape[1:])
    else:
        raise InvalidDataError(
            f"{where} has shape {tuple(array.shape)}; pass [N, features], [N, H, W] or images "
            f"with 1 or 3 channels, [N, C, H, W] or [N, H, W, C]"
        )
    return _check_values(x.reshape(len(x), -1).contiguous(), where), shape


def _labels(y: Optional[np.ndarray], n: int, where: str) -> Optional[torch.Tensor]:
    if y is None:
        return None
    y = np.asarray(y)
    if y.shape != (n,) or y.dtype.kind not in "biu":
        raise InvalidDataError(
            f"the labels in {where} must be {n} whole numbers, one per row; got shape {y.shape} of {y.dtype}"
        )
    return torch.from_numpy(y.astype(np.int64))


def _read_array(path: str) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    if path.endswith(".npy"):
        return np.load(path, allow_pickle=False), None
    if path.endswith(".npz"):
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.keys())
            if not keys:
                raise InvalidDataError(f"{path} holds no array; save the data as x (and labels as y)")
            x = archive["x"] if "x" in keys else archive[keys[0]]
            return x, archive["y"] if "y" in keys else None
    loaded = torch.load(path, weights_only=True)
    if isinstance(loaded, dict):
        if "x" not in loaded:
            raise InvalidDataError(f"{path} holds a dict without 'x'; save {{'x': data, 'y': labels}} or a tensor")
        y = loaded.get("y")
        return loaded["x"].numpy(), None if y is None else y.numpy()
    if not isinstance(loaded, torch.Tensor):
        raise InvalidDataError(f"{path} holds a {type(loaded).__name__}; save a tensor or {{'x': ..., 'y': ...}}")
    return loaded.numpy(), None


def _read_csv(path: str, label_column: Optional[str]) -> Tuple[torch.Tensor, Optional[torch.Tensor], List[str]]:
    with open(path, newline="") as handle:
        rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    if not rows:
        raise InvalidDataError(f"{path} is empty; give one row per datapoint, numbers separated by commas")

    def is_number(cell: str) -> bool:
        try:
            float(cell)
            return True
        except ValueError:
            return False

    header = None if all(is_number(cell) for cell in rows[0]) else [cell.strip() for cell in rows[0]]
    body = rows[1:] if header is not None else rows
    names = header or [f"x{i}" for i in range(len(rows[0]))]
    if not body:
        raise InvalidDataError(f"{path} has a header and no rows of numbers")
    for number, row in enumerate(body, start=2 if header else 1):
        if len(row) != len(names):
            raise InvalidDataError(
                f"{path}: line {number} has {len(row)} values, but the "
                f"{'header' if header else 'first line'} has {len(names)}; give every row the "
                f"same columns"
            )
    label_index = None
    if label_column is not None:
        if label_column not in names:
            raise ConfigError(
                f"label_column={label_column!r} is not a column of {path} (its columns: {', '.join(names)})",
                settings=("label_column",),
            )
        label_index = names.index(label_column)
    values = np.empty((len(body), len(names)), dtype=np.float64)
    for number, row in enumerate(body, start=2 if header else 1):
        for j, cell in enumerate(row):
            try:
                values[number - (2 if header else 1), j] = float(cell)
            except ValueError:
                raise InvalidDataError(
                    f"{path}: column {names[j]!r} holds text ({cell.strip()!r} on line {number}); "
                    f"give numbers only, or take the column out as the labels (label_column)"
                ) from None
    labels = None
    if label_index is not None:
        column = values[:, label_index]
        if not np.all(column == np.round(column)):
            raise InvalidDataError(
                f"{path}: the label column {label_column!r} holds values that are not whole "
                f"numbers; labels are class indices"
            )
        labels = torch.from_numpy(column.astype(np.int64))
        values = np.delete(values, label_index, axis=1)
        names = [n for i, n in enumerate(names) if i != label_index]
    x = _check_values(torch.from_numpy(values.astype(np.float32)), path)
    return x, labels, names


def _read_folder(path: str) -> Tuple[torch.Tensor, Optional[torch.Tensor], Tuple[int, ...], List[str]]:
    from PIL import Image  # torchvision's dependency

    classes = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
    places = [(os.path.join(path, c), i) for i, c in enumerate(classes)] if classes else [(path, None)]
    files = [
        (os.path.join(folder, f), label)
        for folder, label in places
        for f in sorted(os.listdir(folder))
        if f.lower().endswith(IMAGE_SUFFIXES)
    ]
    if not files:
        raise InvalidDataError(
            f"{path} holds no image files ({', '.join(IMAGE_SUFFIXES)}), neither in it nor in sub-folders"
        )
    images = [Image.open(f) for f, _ in files]
    colour = any(image.mode not in ("L", "1", "I;16", "I", "F") for image in images)
    arrays, first = [], None
    for (file, _), image in zip(files, images):
        array = np.asarray(image.convert("RGB" if colour else "L"), dtype=np.float32) / 255
        if first is None:
            first = (file, array.shape)
        elif array.shape != first[1]:
            raise InvalidDataError(
                f"the images in {path} differ in size: {os.path.relpath(file, path)} is "
                f"{array.shape[1]}x{array.shape[0]}, {os.path.relpath(first[0], path)} "
                f"{first[1][1]}x{first[1][0]}; resize them to one size"
            )
        arrays.append(array)
    stacked = np.stack(arrays)
    x = torch.from_numpy(stacked.transpose(0, 3, 1, 2) if colour else stacked[:, None])
    labels = torch.tensor([label for _, label in files]) if classes else None
    return x.reshape(len(x), -1).contiguous(), labels, tuple(x.shape[1:]), classes


def _torchvision(name: str, data_dir: Optional[str], download: bool) -> Data:
    from torchvision import datasets

    cls, title = {"fashion_mnist": (datasets.FashionMNIST, "Fashion-MNIST"), "kmnist": (datasets.KMNIST, "KMNIST")}[
        name
    ]
    root = data_dir or os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "pyro_vae")
    try:
        train, test = cls(root, train=True, download=download), cls(root, train=False, download=download)
    except Exception as err:
        reason = " ".join(str(err).split())
        reason = reason.rsplit("got: ", 1)[-1][:120]  # torchvision lists every mirror: the last one's error
        raise DataNotFoundError(
            f"{title} is not in {root} and could not be downloaded ({reason}); put its four "
            f"files in {os.path.join(root, cls.__name__, 'raw')}, or pass data_dir",
            settings=("data_dir",),
        ) from None
    to_rows = lambda ds: ds.data.reshape(len(ds.data), -1).float() / 255  # noqa: E731
    return Data(
        to_rows(train),
        to_rows(test),
        train.targets.long(),
        test.targets.long(),
        (1, 28, 28),
        f"{title} ({len(train.data):,} train / {len(test.data):,} test, {root})",
    )


def load_data(
    source: Union[str, os.PathLike],
    data_dir: Optional[str] = None,
    test_fraction: float = 0.1,
    seed: int = 0,
    label_column: Optional[str] = None,
    download: bool = True,
) -> Data:
    """The data of ``source`` (see the module docstring), ready for a model.

    :param data_dir: where MNIST, Fashion-MNIST and KMNIST are looked for (and downloaded into).
    :param test_fraction: the share of rows held out, for sources without a split of their own.
    :param seed: the seed of that split.
    :param label_column: the CSV column holding class labels, taken out of the features.
    :param download: whether MNIST, Fashion-MNIST and KMNIST may be downloaded.
    :raises DataNotFoundError: the path does not exist, or the named data could not be had.
    :raises InvalidDataError: a file that cannot be read as data, in one line naming what and where.
    """
    source = os.fspath(source)
    if source == "mnist":
        mnist = load_mnist(data_dir, download=download, verbose=False)
        return Data(
            mnist.train_images, mnist.test_images, mnist.train_labels, mnist.test_labels, (1, 28, 28), mnist.source
        )
    if source in ("fashion_mnist", "kmnist"):
        return _torchvision(source, data_dir, download)
    if source == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.from_numpy(digits.data.astype(np.float32)) / 16  # 17 grey levels, 0-16
        return _split(
            x,
            torch.from_numpy(digits.target),
            (1, 8, 8),
            "scikit-learn's 8x8 digits (1,797 images, grey levels 0-16 scaled to [0, 1])",
            test_fraction,
            seed,
        )
    if source == "wine":
        from sklearn.datasets import load_wine

        wine = load_wine()
        x = torch.from_numpy(wine.data.astype(np.float32))
        x = (x - x.mean(0)) / x.std(0)
        return _split(
            x,
            torch.from_numpy(wine.target),
            (x.shape[1],),
            "scikit-learn's wine table (178 wines, 13 features, standardized)",
            test_fraction,
            seed,
            list(wine.feature_names),
        )
    if not os.path.exists(source):
        raise DataNotFoundError(
            f"{source} does not exist; pass a .npy, .npz, .pt or .csv file, a folder of images, "
            f"or one of {', '.join(NAMED)}",
            settings=("data",),
        )
    if os.path.isdir(source):
        x, y, shape, classes = _read_folder(source)
        what = f"{len(x)} images of {shape[1]}x{shape[2]}" + (" (colour)" if shape[0] == 3 else "")
        return _split(
            _check_values(x, source),
            y,
            shape,
            f"{source}: {what}" + (f", {len(classes)} classes" if classes else ""),
            test_fraction,
            seed,
        )
    if os.path.getsize(source) == 0:
        raise InvalidDataError(f"{source} is empty (0 bytes); give a file with one row per datapoint")
    if source.endswith(".csv"):
        x, y, names = _read_csv(source, label_column)
        return _split(
            x, y, (x.shape[1],), f"{source}: {len(x)} rows of {x.shape[1]} features", test_fraction, seed, names
        )
    if source.endswith((".npy", ".npz", ".pt")):
        try:
            array, raw_y = _read_array(source)
        except (ValueError, OSError, RuntimeError) as err:
            raise InvalidDataError(
                f"{source} could not be read as an array ({' '.join(str(err).split())[:120]}); "
                f"save it with np.save, np.savez or torch.save"
            ) from None
        x, shape = _as_rows(np.asarray(array), source)
        return _split(
            x, _labels(raw_y, len(x), source), shape, f"{source}: {len(x)} rows of shape {shape}", test_fraction, seed
        )
    raise InvalidDataError(
        f"{source} is neither a folder nor a .npy, .npz, .pt or .csv file; convert it to one of those"
    )
