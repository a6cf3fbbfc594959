r"""Training the CVAE and its baseline (:mod:`pyro_vae.models.cvae`): SVI on the conditional ELBO,
one :class:`~pyro_vae.training.step.CheckedStep` per minibatch, checkpointed after every
epoch (:mod:`pyro_vae.training.loop_state`), with optional early stopping on held-out images.

Early stopping, as Pyro's CVAE tutorial trains both networks: the last ``validation``
training images are held out; after every epoch their loss is measured, the negative
conditional ELBO per image, :math:`-\mathbb E_{q(z|x,y)}[\log p(y|x,z) + \log p(z|x) - \log q(z|x,y)]`
(for the baseline exactly :math:`-\log p(y|x)`), with the latent noise drawn from a side stream
of fixed seed (:func:`pyro_vae.rng.rng_fork`), so every epoch is scored on the same draws
and training's own random numbers are untouched. The weights of the best epoch are kept and
restored at the end; training stops after ``patience`` epochs without a better one. The test
set is never looked at.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
from pyro.infer import Trace_ELBO
from torch import nn

from pyro_vae.models.cvae import split_quadrants
from pyro_vae.data.images import binarize, check_binarization
from pyro_vae.errors import ConfigError, NonFiniteError, check_count, check_positive, check_seed
from pyro_vae.training.loop_state import LoopState, resume_or_start, save_loop
from pyro_vae.models.plate import registration_skipped
from pyro_vae.rng import rng_fork
from pyro_vae.training.step import CheckedStep, NonFiniteStep

#: The side stream of the validation loss's latent noise.
VALIDATION_SEED = 20151207


class _PairObjective:
    """The form :class:`~pyro_vae.training.step.CheckedStep` takes: ``module((x, y), num_data)``
    is the negative conditional ELBO of the minibatch at the scale ``N/B``."""

    skip_registration = True

    def __init__(self, net: nn.Module) -> None:
        self.vae = net
        self.elbo = Trace_ELBO(max_plate_nesting=1)

    def module(self, batch: Tuple[torch.Tensor, torch.Tensor], num_data: int) -> torch.Tensor:
        x, y = batch
        return self.elbo.differentiable_loss(self.vae.model, self.vae.guide, x, y, num_data=num_data)


@dataclass(frozen=True)
class FitConfig:
    """Settings of :func:`fit_conditional`, checked when made: each bad value raises
    :class:`~pyro_vae.errors.ConfigError` naming its setting (``validation`` is checked
    against the data by :func:`fit_conditional`)."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    #: ``"dynamic"`` (binary pixels drawn afresh each epoch) or ``"none"`` (grey levels as
    #: Bernoulli targets, their cross-entropy, as Pyro's tutorial trains)
    binarize: str = "dynamic"
    #: training images held out (the last ones) to choose the best epoch; 0: none, train on all
    validation: int = 0
    #: with ``validation``: stop after this many epochs without a better validation loss
    patience: Optional[int] = None

    def __post_init__(self) -> None:
        check_positive("epochs", self.epochs, example=10)
        check_positive("batch_size", self.batch_size, example=128)
        object.__setattr__(self, "lr", float(check_positive("lr", self.lr, float, 1e-3)))
        check_seed("seed", self.seed)
        check_binarization(self.binarize)
        check_count("validation", self.validation, example=10000)
        if self.patience is not None:
            check_positive("patience", self.patience, example=3)


def validation_loss(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """The negative conditional ELBO per pair, one draw of :math:`z` each, on a side stream
    of fixed seed (the same draws every call; the caller's stream untouched)."""
    elbo, total = Trace_ELBO(max_plate_nesting=1), 0.0
    with torch.no_grad(), rng_fork(VALIDATION_SEED), registration_skipped():
        for i in range(0, len(x), batch_size):
            total += float(elbo.loss(net.model, net.guide, x[i:i + batch_size], y[i:i + batch_size]))
    return total / len(x)


def _held_out(images: torch.Tensor, config: FitConfig, num_inputs: int):
    """``(training images, validation (x, y) or None)``; validation images binarized once, as the test set."""
    if config.validation == 0:
        return images, None
    if config.validation >= len(images):
        raise ConfigError(f"validation={config.validation} held-out images asked of {len(images)} training images; "
                          f"pass fewer (e.g. {len(images) // 6}) or 0 for none", settings=("validation",))
    held = binarize(images[-config.validation:], "fixed" if config.binarize == "dynamic" else config.binarize)
    return images[:-config.validation], split_quadrants(held, num_inputs)


def _patience_ran_out(state: LoopState, config: FitConfig) -> bool:
    return (config.patience is not None and "best_epoch" in state.position
            and state.epoch - state.position["best_epoch"] >= config.patience)


def fit_conditional(net: nn.Module, images: torch.Tensor, config: FitConfig,
                    on_step: Optional[Callable[[int], None]] = None,
                    max_steps: Optional[int] = None, checkpoint: Optional[str] = None,
                    resume: bool = False) -> List[Dict[str, float]]:
    """Train a :class:`~pyro_vae.models.cvae.CVAE` or :class:`~pyro_vae.models.cvae.Baseline` on the training
    ``images`` (binarized as ``config.binarize`` says, split into the net's quadrants), one
    :class:`~pyro_vae.training.step.CheckedStep` per minibatch; returns one record per epoch:
    the mean training loss (negative conditional ELBO per image), the seconds, and with
    ``config.validation`` the validation loss (:func:`validation_loss`). With validation, the
    net ends with the weights of its best epoch (the module docstring).

    :param checkpoint: a file written after every epoch (:mod:`pyro_vae.training.loop_state`).
    :param resume: continue from ``checkpoint`` if it exists, exactly as if never stopped
        (``config.epochs`` and ``config.lr`` may differ from the checkpoint's).
    :raises pyro_vae.errors.CheckpointError: ``checkpoint`` written with other settings.
    :raises pyro_vae.errors.ConfigError: ``validation`` not smaller than the training set, or
        ``max_steps`` not a positive integer.
    """
    if max_steps is not None:
        check_positive("max_steps", max_steps, example=300)
    images, held = _held_out(images, config, net.num_inputs)
    torch.manual_seed(config.seed)
    objective = _PairObjective(net)
    step = CheckedStep(objective, objective.module, lr=config.lr, module=net)
    gen = torch.Generator().manual_seed(config.seed)
    n, b = len(images), min(config.batch_size, len(images))
    state = resume_or_start(checkpoint, resume, net, net.config, config, step.optimizer, gen)
    for epoch in range(state.epoch + 1, config.epochs + 1):
        if (max_steps is not None and state.steps >= max_steps) or _patience_ran_out(state, config):
            break
        began, perm, total, done = time.perf_counter(), torch.randperm(n, generator=gen), 0.0, 0
        for i in range(n // b):
            x, y = split_quadrants(binarize(images[perm[i * b:(i + 1) * b]], config.binarize, gen), net.num_inputs)
            try:
                total += step((x, y), n)
            except NonFiniteStep as err:
                raise NonFiniteError(f"training stopped at epoch {epoch}, step {i}: {err.reason}; lower lr",
                                     epoch=epoch, step=i, settings=("lr",)) from err
            done, state.steps = done + 1, state.steps + 1
            if on_step is not None:
                on_step(state.steps)
            if max_steps is not None and state.steps >= max_steps:
                break
        record = {"epoch": epoch, "steps": state.steps, "lr": config.lr, "train_loss": total / done / n}
        state.epoch = epoch
        if held is not None:
            record["validation_loss"] = validation_loss(net, *held)
            state.keep_best(net, record["validation_loss"], higher_is_better=False)
        record["seconds"] = time.perf_counter() - began
        state.history.append(record)
        if checkpoint is not None:
            save_loop(checkpoint, net, net.config, config, step.optimizer, gen, state)
    state.restore_best(net)
    return state.history
