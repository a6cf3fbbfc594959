r"""Weight averaging as a callback: from an epoch on, the model scored and kept is the running mean
of the weights at the ends of the epochs since (stochastic weight averaging, Izmailov et al.,
2018, "Averaging Weights Leads to Wider Optima and Better Generalization"):

.. math::

    \bar\theta_n = \frac1n \sum_{e=s}^{s+n-1} \theta_e ,

kept by :class:`torch.optim.swa_utils.AveragedModel`. Training itself continues from the last
weights :math:`\theta_e`, as without averaging: the mean is swapped in for each held-out evaluation
and swapped out again before the epoch's checkpoint, which holds the last weights, the mean and
its count, so that a resumed run averages exactly as an uninterrupted one. When training ends, the
model keeps the mean.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Optional

import torch
from torch.optim.swa_utils import AveragedModel

from pyro_vae.errors import ConfigError, check_positive
from pyro_vae.training.callbacks import Callback

if TYPE_CHECKING:  # pragma: no cover
    from pyro_vae.training.trainer import Trainer


def copy_into(params: Iterable[torch.Tensor], values: Iterable[torch.Tensor]) -> None:
    """Copy ``values`` into ``params``, in place and without a graph (a mean in, or the last weights back)."""
    with torch.no_grad():
        for p, v in zip(params, values):
            p.copy_(v)


class WeightAveraging(Callback):
    """Average the weights of the model's and guide's modules from epoch ``start_epoch`` on.

    Each epoch's record gets ``averaged_epochs``, the number of epochs in the mean its held-out
    ELBO was computed with. Give it after :class:`~pyro_vae.training.early_stopping.EarlyStopping`
    in the list of callbacks, so that early stopping keeps the mean it scored.
    """

    def __init__(self, start_epoch: int) -> None:
        self.start_epoch = check_positive("start_epoch", start_epoch, int, 10)
        self.averaged: Optional[AveragedModel] = None
        self._last: Optional[List[torch.Tensor]] = None  # the training weights, while the mean is in
        self._pending: Optional[Dict[str, Any]] = None  # a checkpoint's mean, taken in at on_fit_start

    def _params(self, trainer: "Trainer") -> List[torch.Tensor]:
        return list(trainer.program.module.parameters())

    def _average(self, trainer: "Trainer") -> AveragedModel:
        if self.averaged is None:
            self.averaged = AveragedModel(trainer.program.module)
        return self.averaged

    def on_pass_end(self, trainer: "Trainer") -> None:
        completed = trainer.position is None  # a pass a signal stopped is not an epoch's end
        if not completed or trainer.epoch + 1 < self.start_epoch:
            return
        average = self._average(trainer)
        average.update_parameters(trainer.program.module)
        self._last = [p.detach().clone() for p in self._params(trainer)]
        copy_into(self._params(trainer), list(average.module.parameters()))  # evaluated with the mean

    @property
    def holds_mean(self) -> bool:
        """Whether the modules hold the mean now (between the end of a pass and its epoch's end)."""
        return self._last is not None

    @contextlib.contextmanager
    def last_weights(self, trainer: "Trainer") -> Iterator[None]:
        """While the mean is in (:attr:`holds_mean`), put the last training weights back for the
        duration of the block: to score what averaging changed."""
        if self._last is None:
            yield
            return
        mean = [p.detach().clone() for p in self._params(trainer)]
        copy_into(self._params(trainer), self._last)
        try:
            yield
        finally:
            copy_into(self._params(trainer), mean)

    def on_epoch_metrics(self, trainer: "Trainer", record: Dict[str, float]) -> None:
        if self._last is not None:
            assert self.averaged is not None  # on_pass_end made it before holding the mean
            record["averaged_epochs"] = int(self.averaged.n_averaged)

    def on_epoch_end(self, trainer: "Trainer", record: Dict[str, float]) -> None:
        if self._last is None:
            return
        copy_into(self._params(trainer), self._last)  # training and its checkpoint go on from the last weights
        self._last = None

    def on_fit_end(self, trainer: "Trainer", error: Optional[BaseException]) -> None:
        if self._last is not None:  # stopped between the pass and the epoch's end
            copy_into(self._params(trainer), self._last)
            self._last = None
        if error is None and self.averaged is not None:
            copy_into(self._params(trainer), list(self.averaged.module.parameters()))

    def state_dict(self) -> Dict[str, Any]:
        average = self.averaged.state_dict() if self.averaged is not None else self._pending
        return {"start_epoch": self.start_epoch, "average": average}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if state["average"] is not None and int(state["start_epoch"]) != self.start_epoch:
            raise ConfigError(
                f"the checkpoint's weights are averaged from epoch {state['start_epoch']}; resume "
                f"with start_epoch={state['start_epoch']}, or start a new run to average from "
                f"epoch {self.start_epoch}",
                settings=("start_epoch",),
            )
        self._pending = state["average"]

    def on_fit_start(self, trainer: "Trainer") -> None:
        if self._pending is not None:
            self._average(trainer).load_state_dict(self._pending)
            self._pending = None
        elif self.averaged is None and trainer.epoch >= self.start_epoch:
            raise ConfigError(
                f"start_epoch={self.start_epoch} is not after the checkpoint's epoch {trainer.epoch}, "
                f"whose earlier weights are gone; pass start_epoch={trainer.epoch + 1} or later",
                settings=("start_epoch",),
            )
