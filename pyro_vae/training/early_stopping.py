"""Early stopping on a held-out metric, as a callback: stop when it has not improved for
``patience`` epochs, and end with the weights of its best epoch.

The best value, its epoch and a copy of the weights then are kept in the checkpoint
(:meth:`EarlyStopping.state_dict`), so a resumed run stops where an uninterrupted one would, and
ends with the same weights. The checkpoint itself holds the last epoch's weights, from which
training continues; ``best_epoch`` says which epoch's weights the run ended with.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Dict, Optional

from pyro_vae.errors import ConfigError, check_positive
from pyro_vae.training.callbacks import Callback

if TYPE_CHECKING:  # pragma: no cover
    from pyro_vae.training.trainer import Trainer


class EarlyStopping(Callback):
    """Stop training once ``monitor`` (a key of the epoch's record: ``"test_elbo"``, the held-out
    ELBO, by default) has gone ``patience`` epochs without improving, and restore the weights of
    the model's and guide's modules from its best epoch when training ends.

    :param patience: epochs without a better value before training stops; None never stops
        early, and still ends with the best epoch's weights.
    :param mode: ``"max"`` (an ELBO: higher is better) or ``"min"`` (a loss).
    :param restore_best: end with the best epoch's weights (True) or the last epoch's.
    """

    def __init__(
        self, patience: Optional[int], monitor: str = "test_elbo", mode: str = "max", restore_best: bool = True
    ) -> None:
        self.patience = None if patience is None else check_positive("patience", patience, int, 5)
        if mode not in ("max", "min"):
            raise ConfigError(
                f"mode must be 'max' (higher is better, an ELBO) or 'min' (a loss), got {mode!r}", settings=("mode",)
            )
        self.monitor, self.mode, self.restore_best = monitor, mode, restore_best
        #: the best value so far, its epoch, and the modules' weights at the end of that epoch
        self.best: Optional[float] = None
        self.best_epoch: Optional[int] = None
        self.best_weights: Optional[Dict[str, Any]] = None

    def _better(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        return self.best is None or (value > self.best if self.mode == "max" else value < self.best)

    def _patience_ran_out(self, trainer: "Trainer") -> bool:
        return (
            self.patience is not None
            and self.best_epoch is not None
            and trainer.epoch - self.best_epoch >= self.patience
        )

    def on_fit_start(self, trainer: "Trainer") -> None:
        if self._patience_ran_out(trainer):  # resumed after the stop: train no further
            trainer.should_stop = True

    def on_epoch_end(self, trainer: "Trainer", record: Dict[str, float]) -> None:
        if self.monitor not in record:  # an epoch without evaluation: nothing to compare
            return
        value = float(record[self.monitor])
        if self._better(value):
            self.best, self.best_epoch = value, int(record["epoch"])
            self.best_weights = {k: v.detach().clone() for k, v in trainer.program.module.state_dict().items()}
        elif self._patience_ran_out(trainer):
            trainer.should_stop = True

    def on_fit_end(self, trainer: "Trainer", error: Optional[BaseException]) -> None:
        if error is None and self.restore_best and self.best_weights is not None:
            trainer.program.module.load_state_dict(self.best_weights)

    def state_dict(self) -> Dict[str, Any]:
        return {
            "best": self.best,
            "best_epoch": self.best_epoch,
            "best_weights": self.best_weights,
            "monitor": self.monitor,
            "mode": self.mode,
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if (state["monitor"], state["mode"]) != (self.monitor, self.mode):
            raise ConfigError(
                f"the checkpoint's early stopping watched {state['monitor']!r} ({state['mode']}), this "
                f"one {self.monitor!r} ({self.mode}); resume with the same monitor and mode",
                settings=("monitor",),
            )
        self.best, self.best_epoch, self.best_weights = state["best"], state["best_epoch"], state["best_weights"]
