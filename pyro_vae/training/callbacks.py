"""Callbacks: the one way to observe and extend training.

A :class:`Callback` overrides any of the hooks below; :meth:`Trainer.fit
<pyro_vae.training.trainer.Trainer.fit>` calls them in this order::

    on_fit_start
    per epoch:  on_epoch_start, on_step_end (every step), on_pass_end,
                on_evaluate (when the test set is evaluated),
                on_epoch_metrics (the epoch's record is assembled: add to it),
                on_epoch_end, on_checkpoint (after each checkpoint written)
    on_fit_end  (always, also when training stops on an error or a signal; in reverse
                order, as exits unwind: the last callback given ends first)

The progress bar (:class:`ProgressBar`), the console log (:class:`ConsoleLog`) and the
metrics file (:class:`MetricsFile`) are callbacks; so is TensorBoard logging
(:class:`pyro_vae.training.tensorboard.TensorBoard`). In a distributed run every process
calls its callbacks; the built-in ones write on rank 0 only.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional

from tqdm.auto import tqdm  # type: ignore[import-untyped]  # tqdm has no type hints (nor types-tqdm here)

from pyro_vae.errors import DiskFullError
from pyro_vae.files import write_text

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from pyro_vae.training.trainer import Trainer


class Callback:
    """The hooks of training; each does nothing unless overridden."""

    def on_fit_start(self, trainer: "Trainer") -> None:
        """Before the first step of :meth:`~pyro_vae.training.trainer.Trainer.fit`."""

    def on_epoch_start(self, trainer: "Trainer", num_steps: int, first_step: int) -> None:
        """A pass of ``num_steps`` steps over the data begins (at ``first_step`` when resumed
        mid-epoch); ``trainer.epoch + 1`` is the epoch it completes."""

    def on_step_end(self, trainer: "Trainer", step: int, loss: float) -> None:
        """Step ``step`` (from 0) of the pass is applied; ``loss`` is its loss at the full-data
        scale, the negative training objective of all :math:`N` images."""

    def on_pass_end(self, trainer: "Trainer") -> None:
        """The pass is over, completed or not (an error or a signal stopped it)."""

    def on_evaluate(self, trainer: "Trainer", metrics: Dict[str, float], test_x: "torch.Tensor") -> None:
        """The held-out data ``test_x`` (prepared: binarized once; :attr:`Trainer.test_data
        <pyro_vae.training.trainer.Trainer.test_data>`) was evaluated: ``metrics`` holds its
        per-datapoint ``elbo``, ``recon``, ``kl`` and, for a model of pixels, ``bits_per_dim``."""

    def on_epoch_metrics(self, trainer: "Trainer", record: Dict[str, float]) -> None:
        """Epoch ``record["epoch"]``'s training and held-out evaluation are done: add what you
        measure to ``record`` (a classifier's accuracy, say), before it is appended to
        ``trainer.history`` and every callback's :meth:`~pyro_vae.training.callbacks.Callback.on_epoch_end` sees it."""

    def on_epoch_end(self, trainer: "Trainer", record: Dict[str, float]) -> None:
        """Epoch ``record["epoch"]`` is done and ``record`` appended to ``trainer.history``."""

    def on_checkpoint(self, trainer: "Trainer", path: str) -> None:
        """A checkpoint was written at ``path``."""

    def on_fit_end(self, trainer: "Trainer", error: Optional[BaseException]) -> None:
        """Training returned (``error`` None) or is raising ``error``."""

    def state_dict(self) -> Optional[Dict[str, Any]]:
        """What a checkpoint must keep of this callback for a resumed run to continue exactly
        (tensors and plain values), or None for a callback without such state."""
        return None

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Take back what :meth:`state_dict` returned, before ``on_fit_start`` of a resumed run."""


class CallbackList(Callback):
    """Several callbacks called in order, as one."""

    def __init__(self, callbacks: Iterable[Callback] = ()) -> None:
        self.callbacks: List[Callback] = list(callbacks)

    def _each(name: str) -> Callable[..., None]:  # type: ignore[misc]  # called in the class body only, then deleted
        def call(self: "CallbackList", *args: Any) -> None:
            for callback in self.callbacks:
                getattr(callback, name)(*args)

        call.__name__ = name
        return call

    on_fit_start = _each("on_fit_start")
    on_epoch_start = _each("on_epoch_start")
    on_step_end = _each("on_step_end")
    on_pass_end = _each("on_pass_end")
    on_evaluate = _each("on_evaluate")
    on_epoch_metrics = _each("on_epoch_metrics")
    on_epoch_end = _each("on_epoch_end")
    on_checkpoint = _each("on_checkpoint")
    del _each

    def on_fit_end(self, trainer: "Trainer", error: Optional[BaseException]) -> None:
        # Reverse order: weight averaging (given after early stopping) puts its mean in first,
        # then early stopping restores the best epoch's weights, which are a mean if it scored one.
        for callback in reversed(self.callbacks):
            callback.on_fit_end(trainer, error)

    def _stateful(self) -> Dict[str, Callback]:
        """The callbacks with state, by class name (numbered when a class appears twice)."""
        named: Dict[str, Callback] = {}
        for callback in self.callbacks:
            if type(callback).state_dict is not Callback.state_dict:
                name = type(callback).__name__
                named[name if name not in named else f"{name}#{len(named)}"] = callback
        return named

    def state_dict(self) -> Dict[str, Any]:
        return {name: callback.state_dict() for name, callback in self._stateful().items()}

    def load_state_dict(self, states: Dict[str, Any]) -> None:
        for name, callback in self._stateful().items():
            if name in states:
                callback.load_state_dict(states[name])


class ProgressBar(Callback):
    """A tqdm bar per epoch, showing the minibatch ELBO per datapoint every ``every`` steps."""

    def __init__(self, every: int = 20) -> None:
        self.every = every
        self._bar: Optional[tqdm] = None

    def on_epoch_start(self, trainer: "Trainer", num_steps: int, first_step: int) -> None:
        self._bar = tqdm(
            total=num_steps,
            initial=first_step,
            desc=f"epoch {trainer.epoch + 1}",
            unit="step",
            leave=False,
            disable=None if trainer.rank == 0 else True,
        )

    def on_step_end(self, trainer: "Trainer", step: int, loss: float) -> None:
        assert self._bar is not None  # made by on_epoch_start
        self._bar.update(1)
        if step % self.every == 0:
            self._bar.set_postfix(elbo=f"{-loss / trainer.num_data:.2f}")

    def on_pass_end(self, trainer: "Trainer") -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def format_record(record: Dict[str, float], epochs: int) -> str:
    """One log line per epoch: train ELBO, test ELBO = reconstruction - KL, bits/dim."""
    if "train_elbo" in record:
        line = f"epoch {int(record['epoch']):>3}/{epochs}  train ELBO {record['train_elbo']:9.3f}"
    else:  # an objective that is not an ELBO
        line = f"epoch {int(record['epoch']):>3}/{epochs}  train objective {record['train_objective']:9.3f}"
    if "test_elbo" in record:
        line += (
            f"  test ELBO {record['test_elbo']:9.3f} = recon {record['test_recon']:9.3f}"
            f" - KL {record['test_kl']:7.3f} nats"
        )
        if "test_bits_per_dim" in record:  # a model of pixels
            line += f"  ({record['test_bits_per_dim']:.4f} bits/dim)"
    for key in sorted(k for k in record if k.endswith("_accuracy") and not k.startswith("unaveraged_")):
        line += f"  {key.replace('_', ' ')} {record[key]:.4f}"
    if "averaged_epochs" in record:
        first = int(record["epoch"]) - int(record["averaged_epochs"]) + 1
        line += f" (weights averaged over epochs {first}-{int(record['epoch'])})"
    return line + f"  {record['seconds']:.1f} s"


class ConsoleLog(Callback):
    """One line per epoch (:func:`format_record`) through ``log``, on rank 0."""

    def __init__(self, log: Callable[[str], None] = print) -> None:
        self.log = log
        self._epochs = 0

    def on_fit_start(self, trainer: "Trainer") -> None:
        self._epochs = trainer.target_epochs

    def on_epoch_end(self, trainer: "Trainer", record: Dict[str, float]) -> None:
        if trainer.rank == 0:
            self.log(format_record(record, self._epochs))


class MetricsFile(Callback):
    """Keeps a JSON file of the run up to date on rank 0: ``history`` after every epoch, and
    whatever :meth:`MetricsFile.update` adds (written at once, atomically)."""

    def __init__(self, path: str, **fields: Any) -> None:
        self.path = path
        self.fields: Dict[str, Any] = dict(fields)
        self._rank = 0
        self._trainer: Optional["Trainer"] = None

    def on_fit_start(self, trainer: "Trainer") -> None:
        self._rank = trainer.rank
        self._trainer = trainer

    def on_epoch_end(self, trainer: "Trainer", record: Dict[str, float]) -> None:
        self.update(history=trainer.history, epochs=trainer.epoch)

    def update(self, **fields: Any) -> None:
        """Add or replace ``fields`` and rewrite the file (atomically: a reader never sees half of it)."""
        self.fields.update(fields)
        if self._rank == 0:
            try:
                write_json(self.path, self.fields)
            except DiskFullError as err:  # also after fit: say which checkpoint is intact
                raise err.with_checkpoint(self._trainer.last_checkpoint) if self._trainer else err from None


def write_json(path: str, data: Dict[str, Any]) -> None:
    """Write ``data`` to ``path`` as JSON, atomically (:func:`pyro_vae.files.write_text`): a
    reader, or a run stopped mid-write, sees the last whole file, never half of one."""
    write_text(path, json.dumps(data, indent=2))
