"""Training any Pyro model and guide (or a VAE of this library) by SVI: :class:`~pyro_vae.training.trainer.Trainer` and its parts, one concept a module.

==========================  ==============================================================
:mod:`.config`              :class:`~.config.TrainConfig`, the validated settings of a run
:mod:`.program`             a model and guide as one thing to train: parameters, calls, checks
:mod:`.objective`           the ELBO, its KL weight, JIT compilation
:mod:`.step`                one checked SVI step: loss and gradients, finite guard, optimizer
:mod:`.diagnosis`           which distribution and which ELBO term went non-finite
:mod:`.epochs`              the data order of an epoch and the position inside it
:mod:`.signals`             the clean stop on SIGINT/SIGTERM
:mod:`.state`               what a checkpoint saves and restores
:mod:`.evaluation`          the test ELBO
:mod:`.callbacks`           hooks to observe and extend training; progress bar, log, metrics
:mod:`.tensorboard`         a TensorBoard callback (optional ``tensorboard`` extra)
:mod:`.early_stopping`      a callback: stop when the held-out metric stops improving, keep the best
:mod:`.averaging`           a callback: the running mean of the weights (torch.optim.swa_utils)
:mod:`.accuracy`            a callback: a classifier's held-out accuracy after every epoch
:mod:`.budget`              a callback: train for a budget of minutes, the schedule one rule of it
:mod:`.checkpoint`          checkpoint files: written atomically, versioned, read weights-only
:mod:`.distributed`         data parallelism over a torch.distributed process group
:mod:`.lightning`           an adapter to PyTorch Lightning (optional ``lightning`` extra)
:mod:`.trainer`             :class:`~.trainer.Trainer`, which orchestrates them
==========================  ==============================================================
"""

from pyro_vae.training.averaging import WeightAveraging
from pyro_vae.training.budget import BudgetSchedule, TimeBudget
from pyro_vae.training.callbacks import Callback, ConsoleLog, MetricsFile, ProgressBar
from pyro_vae.training.config import TrainConfig
from pyro_vae.training.early_stopping import EarlyStopping
from pyro_vae.training.trainer import Trainer

__all__ = [
    "Trainer",
    "TrainConfig",
    "Callback",
    "ProgressBar",
    "ConsoleLog",
    "MetricsFile",
    "EarlyStopping",
    "WeightAveraging",
    "BudgetSchedule",
    "TimeBudget",
]
