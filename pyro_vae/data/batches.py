"""The data a :class:`~pyro_vae.training.trainer.Trainer` steps on: a model's arguments, a minibatch at a time.

A model and its guide take the same arguments, ``model(*args, **kwargs, num_data=N)``. A
:class:`Batch` is one minibatch of those arguments: positional tensors and keyword tensors
whose first dimension runs over the datapoints. The training data is handed over as

- one tensor ``x``: the model is called as ``model(x)``;
- a tuple or list of tensors ``(x, y)``: ``model(x, y)``;
- a dict of tensors ``{"x": x, "y": y}``: ``model(x=x, y=y)``;
- a :class:`torch.utils.data.Dataset` whose items are any of those (collated with
  :func:`torch.utils.data.default_collate`), or a :class:`~torch.utils.data.DataLoader`,
  whose dataset and ``collate_fn`` are used.

The Trainer draws every minibatch's indices itself, from the run's seeded order
(:mod:`~pyro_vae.training.epochs`): that is what makes a resumed run repeat an uninterrupted one
bit for bit, so a DataLoader's own sampler, shuffling and batch size are not used.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from pyro_vae.errors import InvalidDataError

#: What :func:`as_source` accepts.
Data = Union[torch.Tensor, Sequence[torch.Tensor], Dict[str, torch.Tensor], Dataset, DataLoader]


class Batch(NamedTuple):
    """The arguments of one call of the model and the guide, ``fn(*args, **kwargs)``."""

    args: Tuple[Any, ...]
    kwargs: Dict[str, Any]

    @property
    def tensors(self) -> Tuple[torch.Tensor, ...]:
        return (*self.args, *self.kwargs.values())

    @property
    def size(self) -> int:
        """The number of datapoints: the first dimension of every tensor."""
        return int(self.tensors[0].shape[0])

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "Batch":
        """``fn`` applied to every tensor (indexing, moving to a device, sharding)."""
        return Batch(tuple(fn(t) for t in self.args), {k: fn(t) for k, t in self.kwargs.items()})

    def with_first(self, value: torch.Tensor) -> "Batch":
        """This batch with its first tensor (the images, for pyro_vae's models) replaced."""
        if self.args:
            return Batch((value, *self.args[1:]), self.kwargs)
        first = next(iter(self.kwargs))
        return Batch((), {**self.kwargs, first: value})

    @property
    def first(self) -> torch.Tensor:
        return self.tensors[0]

    def select(self, index: Any) -> "Batch":
        """The datapoints ``index`` (a slice or a tensor of indices) of every tensor."""
        return self.map(lambda t: t[index])

    def call(self, fn: Callable[..., Any], num_data: Optional[int] = None) -> Any:
        """``fn(*args, **kwargs)``, with ``num_data=`` when given."""
        if num_data is None:
            return fn(*self.args, **self.kwargs)
        return fn(*self.args, **self.kwargs, num_data=num_data)


def as_batch(value: Any) -> Batch:
    """A collated item or a whole data set as a :class:`Batch` (its tensors checked by
    :func:`check_tensors`, or by a model's own door)."""
    if isinstance(value, Batch):
        return value
    if isinstance(value, dict):
        return Batch((), dict(value))
    if isinstance(value, (tuple, list)):
        return Batch(tuple(value), {})
    return Batch((value,), {})


def check_tensors(batch: Batch, what: str) -> None:
    """Refuse anything but tensors of equal, non-zero length, each in one line."""
    if not batch.tensors:
        raise InvalidDataError(f"the {what} holds no tensor; pass at least one, e.g. the data x")
    for name, t in zip([*range(len(batch.args)), *batch.kwargs], batch.tensors):
        where = f"the {what}" if len(batch.tensors) == 1 else f"the {what}[{name!r}]"
        if not isinstance(t, torch.Tensor):
            raise InvalidDataError(
                f"{where} is a {type(t).__name__}; pass a torch.Tensor (convert it with torch.as_tensor), a "
                f"tuple or dict of tensors, a torch.utils.data.Dataset or a DataLoader"
            )
        if t.dim() == 0:
            raise InvalidDataError(f"{where} is a scalar; every tensor needs a first dimension over the datapoints")
    sizes = {int(t.shape[0]) for t in batch.tensors}
    if len(sizes) > 1:
        raise InvalidDataError(
            f"the tensors of the {what} have {sorted(sizes)} datapoints (first dimensions); "
            f"pass tensors of equal length, one row per datapoint"
        )
    if batch.size == 0:
        raise InvalidDataError(f"the {what} is empty (0 datapoints); pass at least one")


class TensorSource:
    """Data held as tensors: a minibatch is one index per tensor."""

    def __init__(self, batch: Batch) -> None:
        self.batch = batch

    @property
    def num_data(self) -> int:
        return self.batch.size

    def take(self, idx: torch.Tensor) -> Batch:
        return self.batch.select(idx)

    def to(self, device: torch.device) -> "TensorSource":
        return TensorSource(self.batch.map(lambda t: t.to(device)))

    def map(self, fn: Callable[[Batch], Batch]) -> "TensorSource":
        return TensorSource(fn(self.batch))

    @property
    def data(self) -> Any:
        """The data as given: one tensor, or the :class:`Batch` of them."""
        return self.batch.args[0] if len(self.batch.args) == 1 and not self.batch.kwargs else self.batch


class DatasetSource:
    """A map-style :class:`~torch.utils.data.Dataset`: a minibatch collates its items."""

    def __init__(
        self,
        dataset: Dataset,
        collate: Callable[[list], Any] = default_collate,
        prepare: Optional[Callable[[Batch], Batch]] = None,
        what: str = "data",
    ) -> None:
        try:
            self._size = len(dataset)  # type: ignore[arg-type]
        except TypeError:
            raise InvalidDataError(
                f"the {what} is an iterable-style dataset without a length; the Trainer "
                f"draws minibatches by index, so pass a map-style Dataset "
                f"(__getitem__ and __len__) or tensors"
            ) from None
        if self._size == 0:
            raise InvalidDataError(f"the {what} is empty (0 datapoints); pass at least one")
        self.dataset, self.collate, self.prepare, self.what = dataset, collate, prepare, what
        self.device: Optional[torch.device] = None

    @property
    def num_data(self) -> int:
        return self._size

    def take(self, idx: torch.Tensor) -> Batch:
        batch = as_batch(self.collate([self.dataset[i] for i in idx.tolist()]))
        if self.device is not None:
            batch = batch.map(lambda t: t.to(self.device))
        return self.prepare(batch) if self.prepare is not None else batch

    def to(self, device: torch.device) -> "DatasetSource":
        moved = DatasetSource(self.dataset, self.collate, self.prepare, self.what)
        moved.device = device
        return moved

    def map(self, fn: Callable[[Batch], Batch]) -> "DatasetSource":
        """Apply ``fn`` to each minibatch as it is collated (checks run per batch here)."""
        before = self.prepare
        mapped = DatasetSource(self.dataset, self.collate, fn if before is None else lambda b: fn(before(b)), self.what)
        mapped.device = self.device
        return mapped

    @property
    def data(self) -> "DatasetSource":
        """Itself: a dataset's batches are prepared as they are read."""
        return self


#: What :func:`as_source` returns: minibatches of tensors in memory or of a dataset.
Source = Union[TensorSource, DatasetSource]


def as_source(data: Union[Data, Source], what: str = "data") -> Source:
    """``data`` in any of the module's forms as a source of minibatches."""
    if isinstance(data, (TensorSource, DatasetSource)):
        return data
    if isinstance(data, DataLoader):
        return DatasetSource(data.dataset, data.collate_fn or default_collate, what=what)
    if isinstance(data, Dataset) and not isinstance(data, torch.Tensor):
        return DatasetSource(data, what=what)
    return TensorSource(as_batch(data))
