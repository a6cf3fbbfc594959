r"""Training for a budget of wall-clock minutes: one rule that sets the schedule for any budget.

A run given :math:`B` minutes sets its learning rate, KL weight and batch size as functions of
the fraction :math:`f = t/B` of the training minutes spent (evaluations and checkpoints stop the
clock), so that a ten-minute run and an hour's run follow the same rule rather than two
hand-tuned commands:

* the learning rate falls on a cosine from ``lr`` to ``lr_final`` over the whole budget,
  :math:`\eta(f) = \eta_{\min} + \tfrac12(\eta_0 - \eta_{\min})(1 + \cos \pi f)` (SGDR without
  restarts: Loshchilov & Hutter, 2017);
* the KL weight rises linearly from 0 to 1 over the warm-up (Bowman et al., 2016; Sønderby
  et al., 2016), which lasts ``warmup_minutes`` but never more than ``warmup_fraction`` of the
  budget. The warm-up is measured in minutes because what it protects, latent units that the
  KL would switch off before the decoder can use them, depends on how many steps the decoder
  gets before the full KL, not on how long the budget is: a warm-up that shrank with the budget
  (5 % of ten minutes is 30 seconds) cost a ten-minute run 2 nats of held-out NLL;
* the batch size doubles at each of ``batch_doublings`` (fractions of the budget), which
  lowers the gradient noise as the rate falls (Smith et al., 2018);
* optionally, the last part of the budget (from the fraction ``final_from``) optimizes another
  objective, ``final_objective`` with ``final_particles`` (Burda et al.'s importance-weighted
  bound ``"iwae"``, say), by name as :func:`~pyro_vae.inference.objectives.get_objective`
  knows it. Off by default; ``bench/best_nll.py``'s recipe turns it on (IWAE, k = 10, from 70 %);
* optionally, from the fraction ``average_from`` on, the weights at the end of every epoch are
  averaged, :math:`\bar\theta_n = \frac1n \sum_{e} \theta_e` over the ``n`` epochs that end
  past it (stochastic weight averaging: Izmailov et al., 2018, kept by
  :class:`torch.optim.swa_utils.AveragedModel`). Training goes on from the last weights; the
  mean is kept beside them, and :meth:`TimeBudget.load_average` puts it into the model. Epochs
  rather than steps are averaged, as :class:`~pyro_vae.training.averaging.WeightAveraging`
  does for a run of a fixed number of epochs.

How the defaults were chosen, on held-out training images and never on the test set, is in
``docs/models.md`` ("The best test NLL in a budget of minutes") with the records of
``bench/best_nll.py``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

from torch.optim.swa_utils import AveragedModel

from pyro_vae.errors import ConfigError, check_positive
from pyro_vae.inference.objectives import get_objective
from pyro_vae.training.averaging import copy_into
from pyro_vae.training.callbacks import Callback

if TYPE_CHECKING:  # pragma: no cover
    from pyro_vae.training.trainer import Trainer


@dataclass(frozen=True)
class BudgetSchedule:
    """The settings of a run as functions of the fraction ``f`` of its ``minutes`` spent.

    :param minutes: the training budget :math:`B` (evaluations not counted).
    :param lr: the learning rate at the start; ``lr_final`` at the end of the budget.
    :param warmup_minutes: the KL warm-up's length, capped at ``warmup_fraction`` of the budget.
    :param batch_size: the batch size at the start, doubled at each of ``batch_doublings``.
    :param final_objective: the objective from ``final_from`` of the budget on (None: the
        trainer's throughout), with ``final_particles``.
    :param average_from: the fraction of the budget from which the weights at each epoch's end
        are averaged (None: no averaging).
    """

    minutes: float
    lr: float = 2e-3  # chosen on held-out images: row 10 of docs/models.md's budget choice
    lr_final: float = 5e-5
    warmup_minutes: float = 3.0
    warmup_fraction: float = 0.3
    batch_size: int = 256
    batch_doublings: Tuple[float, ...] = (0.5, 0.8)
    final_objective: Optional[str] = None
    final_particles: Optional[int] = None
    final_from: float = 0.7
    average_from: Optional[float] = None

    def __post_init__(self) -> None:
        check_positive("minutes", self.minutes, float, 60.0)
        check_positive("lr", self.lr, float, 1e-3)
        check_positive("batch_size", self.batch_size, int, 256)
        if not 0 < self.lr_final <= self.lr:
            raise ConfigError(f"lr_final must be in (0, lr={self.lr}], got {self.lr_final!r}", settings=("lr_final",))
        if self.warmup_minutes < 0 or not 0 <= self.warmup_fraction <= 1:
            raise ConfigError(
                f"warmup_minutes must be >= 0 and warmup_fraction in [0, 1], got "
                f"{self.warmup_minutes!r} and {self.warmup_fraction!r}",
                settings=("warmup_minutes", "warmup_fraction"),
            )
        if any(not 0 < f < 1 for f in self.batch_doublings):
            raise ConfigError(
                f"batch_doublings are fractions of the budget in (0, 1), got {list(self.batch_doublings)}",
                settings=("batch_doublings",),
            )
        if self.final_objective is not None:
            get_objective(self.final_objective, self.final_particles)  # refuses an unknown name by itself
            if not 0 < self.final_from < 1:
                raise ConfigError(
                    f"final_from is the fraction of the budget where final_objective starts, in "
                    f"(0, 1), got {self.final_from!r}",
                    settings=("final_from",),
                )
        if self.average_from is not None and not 0 <= self.average_from < 1:
            raise ConfigError(
                f"average_from is the fraction of the budget from which weights are averaged, in "
                f"[0, 1), got {self.average_from!r}",
                settings=("average_from",),
            )

    @property
    def warmup(self) -> float:
        """The warm-up as a fraction of the budget."""
        return min(self.warmup_fraction, self.warmup_minutes / self.minutes)

    def lr_at(self, f: float) -> float:
        """The cosine from ``lr`` to ``lr_final``."""
        f = min(max(f, 0.0), 1.0)
        return self.lr_final + 0.5 * (self.lr - self.lr_final) * (1 + math.cos(math.pi * f))

    def beta_at(self, f: float) -> float:
        """The KL weight: linear from 0 to 1 over the warm-up, then 1."""
        return 1.0 if self.warmup == 0 else min(1.0, max(f, 0.0) / self.warmup)

    def batch_size_at(self, f: float) -> int:
        """``batch_size`` doubled at each of ``batch_doublings`` already passed."""
        return self.batch_size * 2 ** sum(f >= d for d in self.batch_doublings)


class TimeBudget(Callback):
    """Apply a :class:`BudgetSchedule` as training goes, count its minutes, and stop
    :meth:`Trainer.fit <pyro_vae.training.trainer.Trainer.fit>` when they are spent.

    The clock runs during training passes only: from each epoch's start to the end of its pass,
    so evaluations, checkpoints and what callbacks do after the pass are not counted. The
    minutes spent are kept in the checkpoint (a resumed run continues the budget). The learning
    rate and KL weight are set at every epoch's start and every ``every`` steps. The batch size
    of :meth:`batch_size` is for a loop of :meth:`Trainer.train_epoch
    <pyro_vae.training.trainer.Trainer.train_epoch>` (``fit`` keeps one batch size).
    """

    def __init__(self, schedule: BudgetSchedule, every: int = 20) -> None:
        self.schedule = schedule
        self.every = check_positive("every", every, int, 20)
        self.spent = 0.0  # seconds
        self.final = False  # whether the final objective is in use
        #: the mean of the weights since ``schedule.average_from`` (None before it, or without it)
        self.averaged: Optional[AveragedModel] = None
        self._since: Optional[float] = None
        self._pending: Optional[Dict[str, Any]] = None  # a checkpoint's mean, before the model is known

    def minutes(self) -> float:
        """Training minutes spent so far."""
        running = time.perf_counter() - self._since if self._since is not None else 0.0
        return (self.spent + running) / 60

    def fraction(self) -> float:
        """The fraction of the budget spent, in [0, 1]."""
        return min(1.0, self.minutes() / self.schedule.minutes)

    def spent_all(self) -> bool:
        return self.minutes() >= self.schedule.minutes

    def batch_size(self) -> int:
        """The schedule's batch size now."""
        return self.schedule.batch_size_at(self.fraction())

    def apply(self, trainer: "Trainer") -> None:
        f, schedule = self.fraction(), self.schedule
        trainer.set_lr(schedule.lr_at(f))
        trainer.set_beta(schedule.beta_at(f))
        if schedule.final_objective is not None and f >= schedule.final_from and not self.final:
            trainer.objective.set_elbo(get_objective(schedule.final_objective, schedule.final_particles))
            self.final = True

    def averaged_epochs(self) -> int:
        """The number of epochs in the mean (0 before ``average_from``)."""
        return 0 if self.averaged is None else int(self.averaged.n_averaged)

    def load_average(self, trainer: "Trainer") -> None:
        """Put the mean of the weights into ``trainer``'s model and guide: the budget's result.

        :raises ConfigError: when nothing has been averaged yet (no ``average_from``, or the
            budget has not reached it).
        """
        if self.averaged is None:
            raise ConfigError(
                f"no weights averaged yet: set average_from (now {self.schedule.average_from!r}) and "
                f"train past it ({self.fraction():.2f} of the budget spent)",
                settings=("average_from",),
            )
        copy_into(trainer.program.module.parameters(), self.averaged.module.parameters())

    def on_fit_start(self, trainer: "Trainer") -> None:
        if self._pending is not None:
            self.averaged = AveragedModel(trainer.program.module)
            self.averaged.load_state_dict(self._pending)
            self._pending = None
        if self.spent_all():  # resumed after the budget ran out
            trainer.should_stop = True

    def on_epoch_start(self, trainer: "Trainer", num_steps: int, first_step: int) -> None:
        self._since = time.perf_counter()
        self.apply(trainer)

    def on_step_end(self, trainer: "Trainer", step: int, loss: float) -> None:
        if step % self.every == 0:
            self.apply(trainer)

    def on_pass_end(self, trainer: "Trainer") -> None:
        if self._since is not None:
            self.spent += time.perf_counter() - self._since
            self._since = None
        start = self.schedule.average_from
        # an epoch's end (not a pass a signal stopped) past the start: its weights join the mean
        if start is not None and trainer.position is None and self.fraction() >= start:
            if self.averaged is None:
                self.averaged = AveragedModel(trainer.program.module)
            self.averaged.update_parameters(trainer.program.module)
        if self.spent_all():
            trainer.should_stop = True

    def on_epoch_metrics(self, trainer: "Trainer", record: Dict[str, float]) -> None:
        record["train_minutes"] = self.minutes()

    def state_dict(self) -> Dict[str, Any]:
        average = self.averaged.state_dict() if self.averaged is not None else self._pending
        return {"spent_seconds": self.spent, "average": average}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.spent = float(state["spent_seconds"])  # the final objective is set again at the first step
        self._pending = state["average"]  # taken in at on_fit_start, where the model is known
