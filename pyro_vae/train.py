r"""Fitting the VAE: stochastic variational inference on the ELBO (seed items 8-10).

Each step draws a minibatch of :math:`B` of the :math:`N` training images and
takes an Adam step on :class:`pyro.infer.Trace_ELBO`'s estimate of
:math:`-\mathrm{ELBO}`, with the plate scaling the batch by :math:`N/B`
(seed item 9). Encoder :math:`\theta` and decoder :math:`\phi` are updated
*jointly* by stochastic gradient ascent -- not by EM (the seed's one slip).

Speed: the objective is used as Pyro's ``ELBO()(model, guide)`` form, an
:class:`~torch.nn.Module` (:class:`ELBOLoss`) whose parameters a single fused
``torch.optim.Adam`` steps, rather than :class:`pyro.infer.SVI` with one Adam per
parameter; the data is validated once when training starts instead of by every
distribution at every step; and the param-store registration that only SVI needs is
skipped. The model, guide, sites and objective value are unchanged (``bench/step.py``
measures each of these levers; ``validate=True`` turns per-step validation back on).
The same module is what :class:`~torch.nn.parallel.DistributedDataParallel` wraps for
multi-process training (:mod:`pyro_vae.distributed`).

Reproducibility: epoch ``e`` draws its data order and its dynamic binarization
from a generator seeded by ``(seed, e)``, so an epoch does not depend on what ran
before it, and a run resumed from a checkpoint draws exactly the same data.

Reliability: a non-finite loss or gradient stops training *before* the optimizer
applies it, with a :class:`~pyro_vae.errors.NonFiniteError` naming the step, the
ELBO term that went bad and the last good checkpoint. Inside :meth:`Trainer.fit`,
SIGINT and SIGTERM finish the current step, write a (mid-epoch) checkpoint and
raise :class:`~pyro_vae.errors.TrainingInterrupted`; resuming it is bit-identical
to never having stopped.
"""

from __future__ import annotations

import copy
import math
import numbers
import os
import random
import re
import signal
import threading
import time
import warnings
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.infer.elbo import ELBO
from pyro.optim.clipped_adam import ClippedAdam
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from . import distributed as dist_util
from .checkpoint import check_writable_dir, load_checkpoint, save_checkpoint
from .data import BINARIZATIONS, binarize, check_pixels
from .elbo import bits_per_dim, elbo_terms
from .errors import CheckpointError, ConfigError, NonFiniteError, TrainingInterrupted, check_positive
from .objectives import ALIASES, OBJECTIVES, check_beta, get_objective, is_jit, kl_weighted, objective_name
from .plate import registration_skipped
from .rng import rng_fork
from .vae import VAE

#: The test set is binarized once, with this seed, whatever the training seed:
#: test figures of runs with different seeds are then on the same data.
TEST_BINARIZATION_SEED = 20151101
#: The signals that stop :meth:`Trainer.fit` cleanly, with a checkpoint.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)




def _positive(name: str, value: Any, kind: type = int) -> Any:
    example = {"lr": 1e-3, "epochs": 10, "test_every": 1}.get(name)
    return check_positive(name, value, kind, example)


class _NonFinite(Exception):
    """Internal: an SVI step met a non-finite loss or gradient (turned into NonFiniteError)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _invalid_parameter(err: ValueError) -> Optional[str]:
    """If ``err`` is torch.distributions' argument validation refusing a NaN/inf parameter,
    say which (e.g. "the logits of Bernoulli"); else None."""
    text = str(err)
    if "found invalid values" not in text:
        return None
    match = re.search(r"Expected parameter (\w+) .*? of distribution (\w+)", text)
    return f"the {match[1]} of {match[2]}" if match else "a distribution's parameters"


def _grad_norm(grads: List[torch.Tensor]) -> torch.Tensor:
    """The total 2-norm of ``grads`` (as :func:`torch.nn.utils.clip_grad_norm_` computes it),
    from one fused kernel: about 0.1 ms for the default VAE's 0.7 M parameters on one core."""
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def _grads_finite(params: Iterable[torch.Tensor]) -> bool:
    """Whether the gradient norm is finite: false if an entry is NaN or infinite, or if the
    squares overflow (float32: entries beyond about 1e19), where Adam's second-moment
    estimate would overflow too and freeze the parameter."""
    return bool(torch.isfinite(_grad_norm([p.grad for p in params if p.grad is not None])))


class ELBOLoss(nn.Module):
    """The training objective of a VAE as a module: ``forward(x, num_data)`` is the loss
    (the negative ELBO, or of the IWAE bound, at the full-data scale ``N/B``), differentiable
    in the VAE's parameters.

    This is the form Pyro's ``Trace_ELBO()(model, guide)`` gives for model and guide
    modules, here for a model and guide that are methods of one VAE: ``parameters()``
    are the VAE's, for a ``torch.optim`` optimizer, and
    :class:`~torch.nn.parallel.DistributedDataParallel` can wrap it.
    """

    def __init__(self, vae: VAE, objective: ELBO, model: Callable[..., Any], guide: Callable[..., Any]) -> None:
        super().__init__()
        self.vae = vae
        self.objective = objective
        self.model = model
        self.guide = guide

    def forward(self, x: torch.Tensor, num_data: int) -> torch.Tensor:
        return self.objective.differentiable_loss(self.model, self.guide, x, num_data=num_data)


def _make_optimizer(params: List[torch.Tensor], lr: float, clip_norm: Optional[float]) -> torch.optim.Optimizer:
    """Adam over ``params``, fused into one kernel where torch has it for their device;
    :class:`pyro.optim.clipped_adam.ClippedAdam` when ``clip_norm`` is given."""
    if clip_norm is not None:
        return ClippedAdam(params, lr=lr, clip_norm=clip_norm)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except RuntimeError:  # a device without the fused kernel
        return torch.optim.Adam(params, lr=lr)


class Trainer:
    """SVI for a :class:`~pyro_vae.vae.VAE`: epochs, evaluation, history and checkpoints.

    :param vae: the model/guide pair to fit.
    :param lr: Adam's learning rate.
    :param binarize: ``"dynamic"``, ``"fixed"`` or ``"none"`` (see :func:`pyro_vae.data.binarize`).
    :param seed: seeds Pyro/torch and the per-epoch data streams.
    :param objective: the training objective, by name -- ``"elbo"``
        (:class:`pyro.infer.Trace_ELBO`, the default), ``"meanfield"``, ``"iwae"``,
        ``"jit_elbo"`` or ``"jit_meanfield"`` (see :mod:`pyro_vae.objectives`) -- or as a
        fresh instance of a :class:`pyro.infer.ELBO` (e.g. ``Trace_ELBO(num_particles=4)``).
        Every feature reads it from here: beta, warm-up, the JIT refusal, checkpoints.
    :param num_particles: particles of an objective given by name (:math:`K` for
        ``"iwae"``); an instance carries its own.
    :param beta: weight of the KL term (of site ``"z"``) in the training objective.
    :param kl_warmup: epochs over which that weight rises linearly from 0 to ``beta``.
    :param clip_norm: if given, train with :class:`pyro.optim.clipped_adam.ClippedAdam`,
        which clamps every gradient entry to ``[-clip_norm, clip_norm]`` before the Adam
        update; the default ``None`` is :class:`torch.optim.Adam` (fused).
    :param validate: run every training step with Pyro's and torch's argument and
        support validation on. Off by default: the data is checked once when
        :meth:`fit` starts, and every step's loss and gradient are checked for
        non-finite values; validation stays on everywhere else (evaluation, the guide
        contract, your own calls of the model and guide).
    :param distributed: train data-parallel in the process group this process belongs
        to (:mod:`pyro_vae.distributed`): the loss module is wrapped in
        :class:`~torch.nn.parallel.DistributedDataParallel`, every rank trains on its
        shard of each global minibatch, metrics are reduced over ranks and only rank 0
        writes checkpoints and logs.
    """

    def __init__(
        self,
        vae: VAE,
        *,
        lr: float = 1e-3,
        binarize: str = "dynamic",
        seed: int = 0,
        objective: Union[str, ELBO] = "elbo",
        num_particles: Optional[int] = None,
        beta: float = 1.0,
        kl_warmup: int = 0,
        clip_norm: Optional[float] = None,
        validate: bool = False,
        distributed: bool = False,
    ) -> None:
        if binarize not in BINARIZATIONS:
            raise ConfigError(f"unknown binarization {binarize!r}; choose one of {list(BINARIZATIONS)}")
        if isinstance(kl_warmup, bool) or not isinstance(kl_warmup, int) or kl_warmup < 0:
            raise ConfigError(
                f"kl_warmup must be a whole number of epochs >= 0, got {kl_warmup!r}; pass e.g. "
                f"kl_warmup=10, or 0 for none"
            )
        loss, objective, num_particles = _objective(objective, num_particles)
        if kl_warmup and is_jit(loss):
            raise ConfigError(
                f"kl_warmup changes the KL weight every step, which a JIT-compiled objective "
                f"({objective!r}) would freeze; use objective='elbo' or 'meanfield' with warm-up"
            )
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise ConfigError(f"seed must be an integer, got {seed!r}; pass e.g. seed=0")
        if not vae.require_reparameterized:
            raise ConfigError(
                "the VAE was built with require_reparameterized=False, but every objective of the "
                "Trainer differentiates through z; build it with the default True, or train the "
                "score-function guide with your own pyro.infer.SVI"
            )
        self.vae = vae
        self.lr = _positive("lr", lr, float)
        if clip_norm is not None:
            clip_norm = float(check_positive("clip_norm", clip_norm, float, 10.0))
        self.clip_norm = clip_norm
        self.binarize = binarize
        self.seed = int(seed)
        self.objective = objective
        self.num_particles = num_particles
        self.beta = check_beta(beta)
        self.kl_warmup = kl_warmup
        self.validate = bool(validate)
        self.loss = loss
        self._pristine_loss = copy.copy(loss)  # uncompiled: what a JIT objective recompiles from
        # The KL weight acts on site "z" of both programs (pyro.poutine.scale, per site).
        self._model = kl_weighted(vae.model, self.beta)
        self._guide = kl_weighted(vae.guide, self.beta)
        self.loss_module = ELBOLoss(vae, self.loss, self._model, self._guide)
        self._owned: List[Tuple[str, torch.Tensor]] = []
        self._use_loss(self.loss)
        self.distributed = bool(distributed)
        self.rank, self.world_size = 0, 1
        if self.distributed:
            if not dist_util.is_distributed():
                raise ConfigError(
                    "distributed=True needs a process group: launch the program with torchrun and "
                    "call pyro_vae.distributed.init_from_env() first", settings=("distributed",)
                )
            self.rank, self.world_size = dist_util.rank_and_world()
            if not hasattr(self.loss, "differentiable_loss"):
                raise ConfigError(
                    f"distributed training needs an objective with differentiable_loss; "
                    f"{type(self.loss).__name__} has none"
                )
            device = self.device
            self._loss_fn: Callable[..., torch.Tensor] = DistributedDataParallel(
                self.loss_module, device_ids=[device] if device.type == "cuda" else None
            )
        else:
            self._loss_fn = self.loss_module
        #: Adam over the VAE's parameters (the ones checkpoints save).
        self.optimizer = _make_optimizer(list(vae.parameters()), self.lr, self.clip_norm)
        # Parameters a custom guide keeps in Pyro's param store only (pyro.param, or pyro.module
        # of a module outside the VAE), found at the first step by name; checkpoints save them
        # by those names, and a resumed trainer writes them back before its first step.
        self._extra_optimizer: Optional[torch.optim.Optimizer] = None
        self._extra_params: List[Tuple[str, torch.Tensor]] = []
        self._pending_extra: Optional[Dict[str, Any]] = None
        self._params: Optional[List[torch.Tensor]] = None
        self.epoch = 0
        self.history: List[Dict[str, float]] = []
        #: ``(checkpoint's lr, this trainer's lr)`` when :meth:`resume` changed the rate, else None.
        self.lr_changed_on_resume: Optional[Tuple[float, float]] = None
        #: (path, epoch, step) of the last checkpoint written or resumed from.
        self.last_checkpoint: Optional[Tuple[str, int, int]] = None
        # Where a stopped epoch resumes: None at an epoch boundary (see train_epoch).
        self._position: Optional[Dict[str, Any]] = None
        self._stop_signal: Optional[int] = None
        self._checkpoint_path: Optional[str] = None  # fit's, for error messages
        pyro.set_rng_seed(self.seed)
        if self.world_size > 1:  # each rank draws its own latent noise
            torch.manual_seed(self.seed + 1_000_003 * self.rank)

    @property
    def jit(self) -> bool:
        """Whether the objective runs JIT-compiled."""
        return is_jit(self.loss)

    def _use_loss(self, loss: ELBO) -> None:
        self.loss = self.loss_module.objective = loss
        # JIT-compiled objectives find the parameters to trace through the param store.
        self._skip_registration = not self.jit
        self._warm_shapes = set()

    def _warm_up(self, x: torch.Tensor, num_data: int, sizes: Iterable[int]) -> None:
        """Compile a JIT objective (``"jit_elbo"``, ``"jit_meanfield"``) and run it to its final
        optimized form for every batch size about to be used, on a forked RNG stream and with
        the gradients discarded: the training steps then draw the same noise and run the same
        kernels whether a run started here or was resumed here (bit-identical resume)."""
        sizes = [b for b in sizes if b not in self._warm_shapes]
        if not self.jit or not sizes:
            return
        try:
            with rng_fork(self.seed + 104_729), pyro.validation_enabled(False):
                for b in sizes:
                    batch = binarize(x[:b], self.binarize, torch.Generator(x.device).manual_seed(0))
                    for _ in range(3):  # profile, optimize, run optimized
                        self.loss_module(batch, num_data=num_data).backward()
                    self._warm_shapes.add(b)
        finally:
            self._zero_grads()
        # Pyro's compiled objective reads the parameters from the global param store by name
        # at every call; remember which entries are ours (see _claim_param_store).
        mine = {id(p) for p in self.vae.parameters()}
        store = pyro.get_param_store()
        self._owned = [(name, value) for name, value in store._params.items() if id(value) in mine]

    def _claim_param_store(self, batch: torch.Tensor, num_data: int) -> None:
        """JIT objectives: if another model with the same parameter names registered since
        (two VAEs named "vae" trained in turns), run model and guide once, which puts this
        VAE's tensors back under those names -- else the compiled objective would use the
        other model's parameters."""
        store = pyro.get_param_store()._params
        if all(store.get(name) is value for name, value in self._owned):
            return
        with rng_fork(0), torch.no_grad(), pyro.validation_enabled(False):
            poutine.block(self._guide)(batch, num_data=num_data)
            poutine.block(self._model)(batch, num_data=num_data)

    def set_lr(self, lr: float) -> None:
        """Change Adam's learning rate for the next steps (for schedules such as Burda et al.'s).

        ``self.lr`` stays the configured base rate; the current rate lives in Adam's
        state, which checkpoints save and restore.
        """
        lr = _positive("lr", lr, float)
        for optimizer in (self.optimizer, self._extra_optimizer):
            for group in optimizer.param_groups if optimizer is not None else ():
                group["lr"] = lr

    def set_beta(self, beta: float) -> None:
        """Set the KL weight the next SVI steps use (KL warm-up calls this every step).

        A JIT-compiled objective has the weight compiled in: a new value recompiles it.
        """
        beta = check_beta(beta)
        if self.jit and beta != self._model.beta:
            self._use_loss(copy.copy(self._pristine_loss))
        self._model.beta = self._guide.beta = beta

    @property
    def current_beta(self) -> float:
        return self._model.beta

    @property
    def device(self) -> torch.device:
        return next(self.vae.parameters()).device

    # ---- data ------------------------------------------------------------------------

    def _epoch_generator(self, epoch: int) -> torch.Generator:
        """Epoch ``epoch``'s data order and binarization: the same on every rank, on the VAE's device."""
        return torch.Generator(device=self.device).manual_seed(self.seed * 1_000_003 + epoch)

    def check_data(self, x: torch.Tensor, what: str) -> torch.Tensor:
        """Flatten ``x``, refuse NaN/out-of-range pixels and, without binarization,
        pixels outside the likelihood's support."""
        x = self.vae.flatten(x)
        check_pixels(x, what)
        if self.binarize == "none":
            self.vae.likelihood.check_support(x)
        return x

    def prepare_test(self, x: torch.Tensor) -> torch.Tensor:
        """The evaluation copy of ``x``: binarized once, with a fixed seed if dynamic."""
        x = self.check_data(x, "test data")
        generator = torch.Generator().manual_seed(TEST_BINARIZATION_SEED)
        return binarize(x, self.binarize, generator).to(self.device)

    # ---- one SVI step ---------------------------------------------------------------------

    def step(self, batch: torch.Tensor, num_data: int, weight: float = 1.0) -> float:
        """One Adam step on ``batch``, a minibatch (this rank's shard of it, when distributed)
        of a training set of ``num_data`` images; the data must be valid (see :meth:`check_data`).

        Returns the loss at the full-data scale: the negative training objective, for the
        whole global minibatch when distributed. ``weight`` multiplies this rank's loss so
        that uneven shards average to the full-batch gradient (:mod:`pyro_vae.distributed`).
        A non-finite loss or gradient raises before the optimizer applies it, leaving the
        parameters as they were (:meth:`train_epoch` turns that into a
        :class:`~pyro_vae.errors.NonFiniteError`).
        """
        if not self.vae.guide_checked:  # here, not inside a JIT trace or DDP's forward
            self.vae.check_guide(batch)
        if self.jit:
            if batch.shape[0] not in self._warm_shapes:
                self._warm_up(batch, num_data, [batch.shape[0]])
            self._claim_param_store(batch, num_data)
        if self._pending_extra is not None:  # resumed: restore the param store before the step runs
            self._restore_extra_params(batch, num_data)
        self._zero_grads()
        first = self._params is None
        refused: Optional[_NonFinite] = None
        with ExitStack() as stack:
            stack.enter_context(pyro.validation_enabled(self.validate))
            if self._skip_registration:
                stack.enter_context(registration_skipped())
            capture = stack.enter_context(poutine.trace(param_only=True)) if first else None
            try:
                loss = self._loss_and_grads(batch, num_data, weight)
            except ValueError as err:
                what = _invalid_parameter(err)
                if what is None:
                    raise
                refused = _NonFinite(f"{what} became NaN or infinite")
                refused.__cause__ = err
                if self.world_size == 1:
                    raise refused from err
                # The other ranks wait in DDP's gradient all-reduce: take part in it with the
                # checks off (NaN flows), then stop all ranks together below.
                with pyro.validation_enabled(False):
                    loss = self._loss_and_grads(batch, num_data, weight)
        if first:
            self._adopt_params(capture.trace)
        if self.world_size > 1:  # the global loss, whether any rank was asked to stop or refused
            signum = self._stop_signal
            flags = [signum == signal.SIGINT, signum == signal.SIGTERM, refused is not None]
            shared = torch.cat([loss.reshape(1).to(torch.float64).cpu(), torch.tensor(flags, dtype=torch.float64)])
            shared = dist_util.all_reduce_sum(shared.to(self.device)).cpu()
            value = float(shared[0]) / self.world_size
            if signum is None and shared[1:3].any():
                self._stop_signal = signal.SIGINT if shared[1] > 0 else signal.SIGTERM
            if refused is not None or shared[3] > 0:
                self._zero_grads()
                if refused is not None:
                    raise refused from refused.__cause__
                raise _NonFinite(f"a parameter of a distribution became NaN or infinite on "
                                 f"{int(shared[3])} other process(es), whose validation refused it")
        else:
            value = float(loss)
        if not math.isfinite(value):
            self._zero_grads()
            raise _NonFinite(f"the loss is {value}")
        if not _grads_finite(self._params):
            self._zero_grads()
            raise _NonFinite(f"the loss is finite ({value:.6g}) but its gradient norm is not")
        self.optimizer.step()
        if self._extra_optimizer is not None:
            self._extra_optimizer.step()
        return value

    def _loss_and_grads(self, batch: torch.Tensor, num_data: int, weight: float) -> torch.Tensor:
        """The weighted loss of ``batch``, its gradients accumulated into the parameters."""
        if not hasattr(self.loss, "differentiable_loss"):  # an ELBO that differentiates itself
            return torch.tensor(float(self.loss.loss_and_grads(self._model, self._guide, batch, num_data=num_data)))
        loss = self._loss_fn(batch, num_data=num_data)
        if weight != 1.0:
            loss = loss * weight
        loss.backward()
        return loss.detach()

    def _zero_grads(self) -> None:
        """Drop the gradients of every parameter the step optimizes."""
        for optimizer in (self.optimizer, self._extra_optimizer):
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)

    def _adopt_params(self, trace: Any) -> None:
        """After the first step: also optimize what the model or guide keeps in Pyro's param
        store only (``pyro.param``), beside the VAE's own parameters."""
        mine = {id(p) for p in self.vae.parameters()}
        named, seen = [], set()
        for name, site in trace.nodes.items():
            value = site["value"].unconstrained()
            if id(value) not in mine and id(value) not in seen and value.requires_grad:
                named.append((name, value))
                seen.add(id(value))
        extra = [value for _, value in named]
        if extra and self.distributed:
            raise ConfigError(
                "distributed training averages the gradients of the VAE's own parameters only, but "
                "the guide keeps parameters in Pyro's param store (pyro.param); make the guide an "
                "nn.Module with those tensors as nn.Parameter"
            )
        if extra:
            lr = self.optimizer.param_groups[0]["lr"]
            self._extra_optimizer = _make_optimizer(extra, lr, self.clip_norm)
        self._extra_params = named
        self._params = list(self.vae.parameters()) + extra

    def _restore_extra_params(self, batch: torch.Tensor, num_data: int) -> None:
        """Resumed from a checkpoint holding param-store-only parameters: run guide and model
        once (on a side RNG stream, without gradients) to find those parameters by name, write
        the saved values into them and restore their Adam state, all before the first step."""
        saved, self._pending_extra = self._pending_extra, None
        with rng_fork(0), torch.no_grad(), pyro.validation_enabled(False), poutine.trace(param_only=True) as capture:
            self._guide(batch, num_data=num_data)
            self._model(batch, num_data=num_data)
        self._adopt_params(capture.trace)
        found = dict(self._extra_params)
        if set(found) != set(saved["params"]):
            raise CheckpointError(
                f"the checkpoint holds the guide's param-store parameters {sorted(saved['params'])}, but "
                f"this guide has {sorted(found)}; resume with the guide that wrote it"
            )
        with torch.no_grad():
            for name, value in found.items():
                value.copy_(saved["params"][name])
        self._extra_optimizer.load_state_dict(saved["optimizer"])

    # ---- one epoch of SVI ----------------------------------------------------------------

    def train_epoch(self, x: torch.Tensor, batch_size: int = 128, progress: bool = True) -> float:
        """One pass over ``x`` in shuffled minibatches (or the rest of a pass that a signal stopped).

        Returns the mean training objective per datapoint: the ELBO by default, the
        IWAE bound or the beta-weighted ELBO when so configured.

        :raises NonFiniteError: at the first non-finite loss or gradient, before the
            optimizer applies it.
        """
        _positive("batch_size", batch_size)
        num_data = x.shape[0]
        self._check_shards(num_data, batch_size)
        x = x.to(self.device)
        position, self._position = self._position, None
        if position is None:
            generator = self._epoch_generator(self.epoch + 1)
            order = torch.randperm(num_data, generator=generator, device=generator.device)
            start, total = 0, 0.0
        else:  # continue the pass that a signal stopped, from its next step
            if (position["num_data"], position["batch_size"]) != (num_data, batch_size):
                self._position = position
                raise CheckpointError(
                    f"epoch {self.epoch + 1} stopped at step {position['step']} of a pass over "
                    f"{position['num_data']} images in batches of {position['batch_size']}, but "
                    f"now {num_data} images in batches of {batch_size} are given; continue with the "
                    f"same training data and batch size", settings=("train_size", "batch_size")
                )
            generator = torch.Generator(device=self.device)
            generator.set_state(position["generator"])
            order, start, total = position["order"], int(position["step"]), float(position["total"])
        batches = order.split(batch_size)
        num_steps = len(batches)
        if self.jit:  # every (shard) size this pass will use: the batch and the last, smaller one
            sizes = {len(range(self.rank, len(b), self.world_size)) for b in (batches[0], batches[-1])}
            self._warm_up(x, num_data, sorted(sizes))
        self.vae.train()
        bar = tqdm(total=num_steps, initial=start, desc=f"epoch {self.epoch + 1}", unit="step",
                   leave=False, disable=None if progress and self.rank == 0 else True)
        try:
            for step in range(start, num_steps):
                idx = batches[step]
                if self.kl_warmup:
                    self.set_beta(self.beta * min(1.0, (self.epoch + step / num_steps) / self.kl_warmup))
                batch = binarize(x[idx], self.binarize, generator)
                weight = 1.0
                if self.world_size > 1:  # every rank binarized the global batch alike; keep our rows
                    batch = dist_util.shard(batch, self.rank, self.world_size)
                    weight = self.world_size * batch.shape[0] / len(idx)
                # The plate scales the batch by num_data / B: the step returns -ELBO for all N.
                noise = torch.get_rng_state()  # ~1 us; lets a diagnosis replay the step's draws
                try:
                    loss = self.step(batch, num_data, weight)
                except _NonFinite as err:
                    raise self._non_finite_error(err.reason, batch, num_data, step, noise) from err.__cause__
                total += loss * len(idx) / num_data
                bar.update(1)
                if step % 20 == 0:
                    bar.set_postfix(elbo=f"{-loss / num_data:.2f}")
                if self._stop_signal is not None and step + 1 < num_steps:
                    self._position = {
                        "epoch": self.epoch + 1,
                        "step": step + 1,
                        "order": order,
                        "generator": generator.get_state(),
                        "total": total,
                        "batch_size": batch_size,
                        "num_data": num_data,
                    }
                    raise TrainingInterrupted(self._stop_signal, self.epoch + 1, step + 1, None)
        finally:
            bar.close()
        self.epoch += 1
        return -total / num_data

    def _check_shards(self, num_data: int, batch_size: int) -> None:
        """Distributed: every global minibatch, the last one included, needs a row per rank."""
        if self.world_size == 1:
            return
        smallest = num_data % batch_size or batch_size
        if min(smallest, batch_size) < self.world_size:
            raise ConfigError(
                f"{self.world_size} processes need at least {self.world_size} images in every minibatch, "
                f"but {num_data} images in batches of {batch_size} leave a last batch of {smallest}; "
                f"choose another batch_size (or number of training images)",
                settings=("batch_size", "train_size"),
            )

    def _non_finite_error(
        self, reason: str, batch: torch.Tensor, num_data: int, step: int, noise: torch.Tensor
    ) -> NonFiniteError:
        """Name the step, the ELBO term that went bad on its batch, and the last good checkpoint."""
        term, detail = self._bad_term(batch, num_data, noise)
        if self.last_checkpoint is None:
            if self._checkpoint_path is None:
                where = "no checkpoint path was given (pass checkpoint= to fit)"
            else:
                where = f"no checkpoint was written yet (the first would have been {self._checkpoint_path})"
            path = done = None
        else:
            path, done, at = self.last_checkpoint
            when = f"epoch {done + 1}, step {at}" if at else f"epoch {done}"
            where = f"the last good checkpoint is {path} ({when})"
        return NonFiniteError(
            f"training stopped at epoch {self.epoch + 1}, step {step}: {reason}; re-evaluated on "
            f"that batch, {detail}. Nothing was written after it: {where}. Retry with a lower "
            f"learning rate (lr) or gradient clipping (clip_norm), or check the data.",
            epoch=self.epoch + 1, step=step, term=term, checkpoint=path, checkpoint_epoch=done,
            settings=("lr", "clip_norm"),
        )

    def _bad_term(self, batch: torch.Tensor, num_data: int, noise: torch.Tensor) -> Tuple[Optional[str], str]:
        """Which part of the ELBO, reconstruction or KL, is non-finite on ``batch``: in value,
        or in gradient at the training scale (the batch sum times ``num_data / B``).

        The guide redraws the step's own noise (the CPU RNG state ``noise`` from before the
        step), the KL is the Monte Carlo one unless the objective is mean-field, and Pyro's
        and torch's validation are off, so NaN flows instead of raising.
        """
        analytic_kl = self.objective in ("meanfield", "jit_meanfield")
        with rng_fork(0), pyro.validation_enabled(False):
            torch.set_rng_state(noise)
            try:
                with poutine.trace(param_only=True) as capture:
                    terms = elbo_terms(self.vae.model, self.vae.guide, batch, analytic_kl=analytic_kl)
            except Exception as err:  # a diagnosis must not hide the error it explains
                return None, f"evaluating its ELBO raised {type(err).__name__}: {str(err).splitlines()[0]}"
            params = [site["value"].unconstrained() for site in capture.trace.nodes.values()]
            params = [p for p in params if p.requires_grad]
            bad, parts, norms, grads_of = [], [], {}, {}
            scale = num_data / batch.shape[0]
            for name, label, per_point in (
                ("reconstruction", "the reconstruction term E_q[log p(x|z)]", terms.recon),
                ("KL", "the KL term KL(q(z|x) || p(z))", terms.kl),
            ):
                value = float(per_point.detach().mean())
                if not math.isfinite(value):
                    bad.append(name)
                    parts.append(f"{label} is {value}")
                    continue
                grads = torch.autograd.grad(per_point.sum() * scale, params, allow_unused=True, retain_graph=True)
                grads_of[name] = grads
                norms[name] = float(_grad_norm([g for g in grads if g is not None]))
                if math.isfinite(norms[name]):
                    parts.append(f"{label} is finite ({value:.4g} nats per datapoint)")
                else:
                    bad.append(name)
                    parts.append(f"{label} is {value:.4g} nats per datapoint but its gradient norm is {norms[name]}")
        detail = " and ".join(parts)
        if bad:
            return " and ".join(bad), f"{detail}: the {' and '.join(bad)} term{'s' if len(bad) > 1 else ''} went bad"
        # The loss is KL - reconstruction: is its gradient finite too?
        loss_grads = [(0 if k is None else k) - (0 if r is None else r)
                      for k, r in zip(grads_of["KL"], grads_of["reconstruction"]) if k is not None or r is not None]
        total = float(_grad_norm(loss_grads))
        if math.isfinite(total):
            return None, (f"{detail}, and so is the loss's gradient (norm {total:.3g}): replaying the step "
                          f"with its own noise did not reproduce the failure here")
        # Each term's gradient is finite alone, but not their sum: name the larger one.
        term = max(norms, key=norms.get)
        sizes = ", ".join(f"{norms[k]:.3g} for {k}" for k in norms)
        return term, f"{detail}, with gradient norms {sizes} that overflow together: the {term} term dominates"

    # ---- evaluation ----------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, batch_size: int = 1000) -> Dict[str, float]:
        """Per-datapoint test ELBO and its parts on prepared data (see :meth:`prepare_test`).

        One sample of ``z`` per datapoint for the reconstruction term, the KL in closed
        form; the noise comes from a fixed seed, so repeated evaluations agree. When
        distributed, each rank evaluates its share of ``x`` and the sums are reduced.
        """
        self.vae.eval()
        keys = ("recon", "kl", "elbo")
        mine = dist_util.shard(x, self.rank, self.world_size)
        sums = torch.zeros(len(keys) + 1, dtype=torch.float64, device=self.device)
        with rng_fork(self.seed + 7919 + self.rank), pyro.validation_enabled(self.validate), ExitStack() as stack:
            if self._skip_registration:
                stack.enter_context(registration_skipped())
            for batch in mine.split(batch_size):
                terms = elbo_terms(self.vae.model, self.vae.guide, batch)
                sums[:-1] += torch.stack([getattr(terms, key).sum() for key in keys]).to(sums.dtype)
                sums[-1] += batch.shape[0]
        self.vae.train()
        sums = dist_util.all_reduce_sum(sums).tolist()
        out = {key: value / sums[-1] for key, value in zip(keys, sums)}
        out["bits_per_dim"] = float(bits_per_dim(torch.tensor(out["elbo"]), self.vae.x_dim))
        return out

    # ---- the loop ------------------------------------------------------------------------

    @contextmanager
    def _signals_stop_training(self) -> Iterator[None]:
        """While training, SIGINT/SIGTERM set a flag that the loop reads after each step;
        a second signal stops at once (KeyboardInterrupt). The previous handlers come back
        afterwards. Signal handlers exist only in the main thread: elsewhere, nothing changes."""
        self._stop_signal = None
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self._stop_signal is not None:
                raise KeyboardInterrupt
            self._stop_signal = signum

        previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old if old is not None else signal.SIG_DFL)
            self._stop_signal = None

    def fit(
        self,
        train_x: torch.Tensor,
        test_x: Optional[torch.Tensor],
        epochs: int,
        batch_size: int = 128,
        test_every: int = 1,
        checkpoint: Optional[str] = None,
        progress: bool = True,
        log: Callable[[str], None] = print,
    ) -> List[Dict[str, float]]:
        """Train until ``self.epoch == epochs`` (so a resumed trainer continues), evaluating
        every ``test_every`` epochs and at the end, checkpointing after every epoch.

        :raises TrainingInterrupted: on SIGINT or SIGTERM, after the current step and a
            checkpoint (mid-epoch if need be) that :meth:`resume` continues exactly.
        :raises NonFiniteError: on a non-finite loss or gradient (see :meth:`train_epoch`).
        """
        _positive("epochs", epochs)
        _positive("batch_size", batch_size)
        _positive("test_every", test_every)
        if checkpoint is not None:
            check_writable_dir(os.path.dirname(os.path.abspath(checkpoint)), "checkpoint directory")
        self._checkpoint_path = checkpoint
        # Signals are caught from here on: one during the checks below stops after the first step.
        with self._signals_stop_training():
            train_x = self.check_data(train_x, "training data").to(self.device)  # once, not per batch
            # The guide contract, before any step (once per VAE; on its own RNG stream).
            self.vae.check_guide(binarize(train_x[:2], self.binarize, torch.Generator(train_x.device).manual_seed(0)))
            test_ready = self.prepare_test(test_x) if test_x is not None else None
            try:
                while self.epoch < epochs:
                    start = time.perf_counter()
                    train_elbo = self.train_epoch(train_x, batch_size, progress)
                    record: Dict[str, float] = {
                        "epoch": self.epoch,
                        "train_elbo": train_elbo,
                        "seconds": time.perf_counter() - start,
                        "beta": self.current_beta,
                    }
                    if test_ready is not None and (self.epoch % test_every == 0 or self.epoch == epochs):
                        test = self.evaluate(test_ready)
                        record.update({f"test_{key}": value for key, value in test.items()})
                    self.history.append(record)
                    if self.rank == 0:
                        log(format_record(record, epochs))
                    if checkpoint is not None:
                        self.save(checkpoint)
                    if self._stop_signal is not None:  # arrived during evaluation or the save
                        raise TrainingInterrupted(self._stop_signal, self.epoch + 1, 0, None)
            except TrainingInterrupted as stop:
                if checkpoint is not None:
                    self.save(checkpoint)
                raise TrainingInterrupted(stop.signum, stop.epoch, stop.step, checkpoint) from None
        return self.history

    # ---- checkpoints ---------------------------------------------------------------------

    def state_dict_config(self) -> Dict[str, Dict[str, Any]]:
        """The settings a checkpoint must share with the trainer that resumes it."""
        return {
            "config": self.vae.config,
            "trainer": {
                "lr": self.lr,
                "binarize": self.binarize,
                "seed": self.seed,
                "objective": self.objective,
                "num_particles": self.num_particles,
                "beta": self.beta,
                "kl_warmup": self.kl_warmup,
                "clip_norm": self.clip_norm,
            },
        }

    def state_dict(self) -> Dict[str, Any]:
        """Everything a resumed run needs to continue bit-identically: weights, optimizer
        state, RNG states, history and, after a signal, the position inside the epoch."""
        np_state = np.random.get_state()
        rng = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "python": random.getstate(),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        }
        state = {
            **self.state_dict_config(),
            "epoch": self.epoch,
            "model": self.vae.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "history": self.history,
            "rng": rng,
            "world_size": self.world_size,
        }
        if self.world_size > 1:  # a collective: every rank calls state_dict (save does)
            # Each rank's latent noise comes from its own torch (and CUDA) generator.
            ranks = [{"torch": t} for t in dist_util.gather_tensors(rng["torch"], self.device)]
            if self.device.type == "cuda":
                for entry, t in zip(ranks, dist_util.gather_tensors(torch.cuda.get_rng_state(self.device), self.device)):
                    entry["cuda_device"] = t
            state["rng_ranks"] = ranks
        if self._position is not None:
            state["partial"] = dict(self._position)
        if self._extra_params:  # a guide's parameters kept in Pyro's param store only
            state["param_store"] = {
                "params": {name: value.detach().clone() for name, value in self._extra_params},
                "optimizer": self._extra_optimizer.state_dict(),
            }
        elif self._pending_extra is not None:  # resumed, not stepped yet: keep what was read
            state["param_store"] = self._pending_extra
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Continue the run ``state`` holds (see :meth:`state_dict`); every setting must match
        it except ``lr``: a trainer built with another rate continues at that rate (to retry a
        run that diverged, say) and records the change in :attr:`lr_changed_on_resume`."""
        mine = self.state_dict_config()
        differ = {
            key: (state[part].get(key), value)
            for part in ("config", "trainer")
            for key, value in mine[part].items()
            if state[part].get(key) != value and key != "lr"
        }
        if differ:
            detail = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in differ.items())
            raise CheckpointError(
                f"the checkpoint was written for another configuration ({detail}); build the VAE "
                f"and Trainer with the checkpoint's settings, or start a new run elsewhere"
            )
        self.vae.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        saved_lr = state["trainer"].get("lr")
        if saved_lr != self.lr:  # the rate given now, not the checkpoint's, from the next step on
            self.set_lr(self.lr)
            self.lr_changed_on_resume = (saved_lr, self.lr)
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])
        self._position = state.get("partial")
        self._pending_extra = state.get("param_store")
        rng = state["rng"]
        ranks = state.get("rng_ranks")
        own_cuda = None
        if self.world_size > 1:
            if ranks is not None and len(ranks) == self.world_size:
                rng = dict(rng, torch=ranks[self.rank]["torch"])
                own_cuda = ranks[self.rank].get("cuda_device")
            else:
                warnings.warn(
                    f"the checkpoint was written by {state.get('world_size', 1)} process(es), this run has "
                    f"{self.world_size}: each rank's latent noise restarts from its own seed, so the "
                    f"continuation is not bit-identical to an uninterrupted run", stacklevel=2)
                rng = dict(rng, torch=torch.manual_seed(self.seed + 1_000_003 * self.rank + self.epoch).get_state())
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        if own_cuda is not None and self.device.type == "cuda":  # this rank's own generator
            torch.cuda.set_rng_state(own_cuda, self.device)
        random.setstate(rng["python"])
        kind, keys, *rest = rng["numpy"]
        np.random.set_state((kind, keys.numpy(), *rest))

    @property
    def step_in_epoch(self) -> int:
        """Steps already taken in epoch ``self.epoch + 1`` (non-zero only after a signal)."""
        return 0 if self._position is None else int(self._position["step"])

    def save(self, path: str) -> None:
        """Write a checkpoint atomically; refuse to replace a good one with non-finite weights."""
        bad = [name for name, p in self.vae.state_dict().items()
               if p.is_floating_point() and not bool(torch.isfinite(p).all())]
        if bad:
            raise NonFiniteError(
                f"refusing to write a checkpoint with non-finite weights ({', '.join(bad[:3])}"
                f"{', ...' if len(bad) > 3 else ''}) over {path}; the file there is unchanged. Reload "
                f"good weights (Trainer.resume) before saving",
                epoch=self.epoch, step=self.step_in_epoch,
            )
        state = self.state_dict()  # on every rank: it gathers their RNG states
        if self.rank == 0:
            save_checkpoint(state, path)
        self.last_checkpoint = (str(path), self.epoch, self.step_in_epoch)

    def resume(self, path: str, state: Optional[Dict[str, Any]] = None) -> None:
        """Continue from the checkpoint at ``path``, written by :meth:`save` for the same
        config; ``state`` is that file's content if the caller has already loaded it."""
        self.load_state_dict(state if state is not None else load_checkpoint(path))
        self.last_checkpoint = (str(path), self.epoch, self.step_in_epoch)


def _objective(objective: Union[str, ELBO], num_particles: Optional[int]) -> Tuple[ELBO, str, Optional[int]]:
    """The objective instance, its name and its particle count, from a name or an instance."""
    if isinstance(objective, str):
        return get_objective(objective, num_particles), ALIASES.get(objective, objective), num_particles
    if not isinstance(objective, ELBO):
        raise ConfigError(
            f"objective must be a name ({', '.join(sorted(OBJECTIVES))}) or a pyro.infer ELBO instance, "
            f"got {type(objective).__name__}"
        )
    if num_particles is not None and num_particles != objective.num_particles:
        raise ConfigError(
            f"num_particles={num_particles} but the objective {type(objective).__name__} has "
            f"num_particles={objective.num_particles}; set it on the instance and leave num_particles=None"
        )
    return objective, objective_name(objective), objective.num_particles


def format_record(record: Dict[str, float], epochs: int) -> str:
    """One log line per epoch: train ELBO, test ELBO = reconstruction - KL, bits/dim."""
    line = f"epoch {int(record['epoch']):>3}/{epochs}  train ELBO {record['train_elbo']:9.3f}"
    if "test_elbo" in record:
        line += (
            f"  test ELBO {record['test_elbo']:9.3f} = recon {record['test_recon']:9.3f}"
            f" - KL {record['test_kl']:7.3f} nats  ({record['test_bits_per_dim']:.4f} bits/dim)"
        )
    return line + f"  {record['seconds']:.1f} s"
