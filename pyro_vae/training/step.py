"""One checked SVI step: loss and gradients, a finite guard, then the optimizer.

:class:`CheckedStep` is :meth:`pyro.infer.SVI.step` with one addition: a non-finite loss
or gradient raises :class:`NonFiniteStep` *before* the optimizer applies it, so the
parameters stay as they were. Its optimizer is one fused :class:`torch.optim.Adam` over the
program's module parameters (or :class:`pyro.optim.clipped_adam.ClippedAdam`), plus one over
whatever model or guide keep in Pyro's param store only, found by name at the first step.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from typing import Any, Callable, Dict, List, Optional, Tuple

import pyro
import torch
from pyro import poutine
from pyro.optim.clipped_adam import ClippedAdam
from torch import nn

from pyro_vae.data.batches import Batch
from pyro_vae.errors import CheckpointError, ConfigError
from pyro_vae.models.plate import registration_skipped
from pyro_vae.rng import rng_fork
from pyro_vae.training.diagnosis import grad_norm, refused_parameter
from pyro_vae.training.objective import Objective

#: ``agree(loss, refused) -> (loss, refusals elsewhere)``: how the processes of a distributed
#: run agree on a step's outcome (see :class:`pyro_vae.training.distributed.StepAgreement`).
Agreement = Callable[[torch.Tensor, bool], Tuple[float, int]]


class NonFiniteStep(Exception):
    """A step met a non-finite loss or gradient; the optimizer did not run."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def make_optimizer(
    params: List[torch.Tensor], lr: float, clip_norm: Optional[float]
) -> Optional[torch.optim.Optimizer]:
    """Adam over ``params``, fused into one kernel where torch has it for their device;
    :class:`~pyro.optim.clipped_adam.ClippedAdam` when ``clip_norm`` is given; None for no parameters."""
    if not params:
        return None
    if clip_norm is not None:
        return ClippedAdam(params, lr=lr, clip_norm=clip_norm)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except RuntimeError:  # a device without the fused kernel
        return torch.optim.Adam(params, lr=lr)


class CheckedStep:
    """Loss and gradients of a minibatch, the finite guard, the optimizer.

    :param loss_fn: the objective's module, or its
        :class:`~torch.nn.parallel.DistributedDataParallel` wrapper.
    :param agree: in a distributed run, how the processes agree on the outcome.
    :param module: the module whose parameters are optimized; the objective's program's by default.
    """

    def __init__(
        self,
        objective: Objective,
        loss_fn: Callable[..., torch.Tensor],
        lr: float,
        clip_norm: Optional[float] = None,
        validate: bool = False,
        agree: Optional[Agreement] = None,
        module: Optional[nn.Module] = None,
    ) -> None:
        self.objective = objective
        self.loss_fn = loss_fn
        self.clip_norm = clip_norm
        self.validate = validate
        self.agree = agree
        self.lr = lr
        self.module = module if module is not None else objective.program.module
        #: Adam over the module's parameters (the ones checkpoints save), None if it has none.
        self.optimizer = make_optimizer(list(self.module.parameters()), lr, clip_norm)
        #: Adam over the parameters a custom guide keeps in Pyro's param store only.
        self.extra_optimizer: Optional[torch.optim.Optimizer] = None
        #: ``(name, tensor)`` of those parameters, known after the first step.
        self.extra_params: List[Tuple[str, torch.Tensor]] = []
        self._params: Optional[List[torch.Tensor]] = None

    def __call__(self, batch: Any, num_data: Optional[int], weight: float = 1.0) -> float:
        """One optimizer step on ``batch`` (valid data) of a training set of ``num_data`` (None:
        model and guide are called without it, the batch being the whole set); returns
        the loss at the full-data scale (the global one, when distributed). ``weight`` multiplies
        this process's loss so that uneven shards average to the full-batch gradient.

        :raises NonFiniteStep: on a non-finite loss or gradient, the parameters untouched.
        """
        batch = batch if isinstance(batch, Batch) else Batch((batch,), {})  # loss_fn(batch, num_data=...)
        self.zero_grads()
        first = self._params is None
        refused: Optional[NonFiniteStep] = None
        with ExitStack() as stack:
            if self.objective.skip_registration:
                stack.enter_context(registration_skipped())
            capture = stack.enter_context(poutine.trace(param_only=True)) if first else None
            try:
                with pyro.validation_enabled(self.validate):
                    loss = self._loss_and_grads(batch, num_data, weight)
            except ValueError as err:
                what = refused_parameter(err)
                if what is None:
                    raise
                refused = NonFiniteStep(f"{what} became NaN or infinite")
                refused.__cause__ = err
                if self.agree is None:
                    raise refused from err
                # The other processes wait in the gradient all-reduce: take part in it with the
                # checks off (NaN flows), then all refuse the step together below.
                with pyro.validation_enabled(False):
                    loss = self._loss_and_grads(batch, num_data, weight)
        if first:
            assert capture is not None  # traced on the first step
            self.adopt_params(capture.trace)
        if self.agree is not None:
            value, refused_elsewhere = self.agree(loss, refused is not None)
        else:
            value, refused_elsewhere = float(loss), 0
        if refused is not None:
            self.zero_grads()
            raise refused from refused.__cause__
        if refused_elsewhere:
            self.zero_grads()
            raise NonFiniteStep(
                f"a parameter of a distribution became NaN or infinite on {refused_elsewhere} "
                f"other process(es), whose validation refused it"
            )
        if not math.isfinite(value):
            self.zero_grads()
            raise NonFiniteStep(f"the loss is {value}")
        assert self._params is not None  # adopt_params set them on the first step
        if not torch.isfinite(grad_norm([p.grad for p in self._params if p.grad is not None])):
            # NaN or inf entries, or squares that overflow (float32: entries beyond about 1e19),
            # where Adam's second-moment estimate would overflow too and freeze the parameter.
            self.zero_grads()
            raise NonFiniteStep(f"the loss is finite ({value:.6g}) but its gradient norm is not")
        for optimizer in (self.optimizer, self.extra_optimizer):
            if optimizer is not None:
                optimizer.step()
        return value

    def _loss_and_grads(self, batch: Batch, num_data: Optional[int], weight: float) -> torch.Tensor:
        if not hasattr(self.objective.elbo, "differentiable_loss"):  # an ELBO that differentiates itself
            return self.objective.loss_and_grads(batch, num_data)
        loss = batch.call(self.loss_fn, num_data)
        if weight != 1.0:
            loss = loss * weight
        loss.backward()
        return loss.detach()

    def zero_grads(self) -> None:
        """Drop the gradients of every parameter the step optimizes."""
        for optimizer in (self.optimizer, self.extra_optimizer):
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)

    def set_lr(self, lr: float) -> None:
        self.lr = lr
        for optimizer in (self.optimizer, self.extra_optimizer):
            for group in optimizer.param_groups if optimizer is not None else ():
                group["lr"] = lr

    def adopt_params(self, trace: Any) -> None:
        """From the first step's parameter trace: also optimize what the model or guide keeps
        in Pyro's param store only (``pyro.param``), beside the program's module parameters."""
        mine = {id(p) for p in self.module.parameters()}
        named, seen = [], set()
        for name, site in trace.nodes.items():
            value = site["value"].unconstrained()
            if id(value) not in mine and id(value) not in seen and value.requires_grad:
                named.append((name, value))
                seen.add(id(value))
        extra = [value for _, value in named]
        if extra and self.agree is not None:
            raise ConfigError(
                f"distributed training averages the gradients of the model's and guide's modules only, but "
                f"they keep parameters in Pyro's param store only ({', '.join(n for n, _ in named[:3])}); make "
                f"model and guide methods of nn.Modules holding those tensors as nn.Parameter",
                settings=("distributed",),
            )
        if extra:
            self.extra_optimizer = make_optimizer(extra, self.lr, self.clip_norm)
        self.extra_params = named
        self._params = list(self.module.parameters()) + extra

    def restore_extra_params(self, saved: Dict[str, Any], batch: Batch, num_data: Optional[int]) -> None:
        """Write a checkpoint's param-store-only parameters and their Adam state back, before the
        first step of a resumed run: model and guide run once (on a side RNG stream, without
        gradients) to find those parameters by name."""
        with rng_fork(0), torch.no_grad(), pyro.validation_enabled(False), poutine.trace(param_only=True) as capture:
            batch.call(self.objective.guide, num_data)
            batch.call(self.objective.model, num_data)
        self.adopt_params(capture.trace)
        found = dict(self.extra_params)
        if set(found) != set(saved["params"]):
            raise CheckpointError(
                f"the checkpoint holds the param-store parameters {sorted(saved['params'])}, but this "
                f"model and guide have {sorted(found)}; resume with the model and guide that wrote it"
            )
        with torch.no_grad():
            for name, value in found.items():
                value.copy_(saved["params"][name])
        assert self.extra_optimizer is not None  # the checkpoint's param-store parameters were found, so it was made
        self.extra_optimizer.load_state_dict(saved["optimizer"])
