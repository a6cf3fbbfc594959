r"""The training objective of a run: one :class:`pyro.infer.ELBO`, weighted and compiled as configured.

:class:`Objective` is the single path through which a :class:`~pyro_vae.training.trainer.Trainer`
reaches its loss. It builds the ELBO from the ``objective`` of :class:`.TrainConfig`, weights the KL term
by :math:`\beta` (:func:`pyro_vae.inference.objectives.kl_weighted`, applied to model and guide), and
for Pyro's JIT-compiled ELBOs keeps what compilation needs: an uncompiled copy to recompile
from when :math:`\beta` changes, the batch sizes already compiled, and the param-store
entries the compiled function reads.

:class:`ELBOLoss` is the objective as an :class:`~torch.nn.Module`, Pyro's
``ELBO()(model, guide)`` form for the model and guide of a
:class:`~pyro_vae.training.program.Program`: its ``parameters()`` are the program's, for one
fused ``torch.optim`` optimizer, and :class:`~torch.nn.parallel.DistributedDataParallel` can wrap it.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Iterable, List, Optional, Set, Tuple

import pyro
import torch
from pyro import poutine
from pyro.infer.elbo import ELBO
from torch import nn

from pyro_vae.data.batches import Batch
from pyro_vae.errors import ConfigError
from pyro_vae.inference.elbo import analytic_kl_allowed
from pyro_vae.inference.objectives import check_beta, get_objective, kl_weighted
from pyro_vae.inference.sites import latent_sites
from pyro_vae.rng import jit_warmup_seed, rng_fork
from pyro_vae.training.config import TrainConfig
from pyro_vae.training.program import Program


class ELBOLoss(nn.Module):
    """``forward(*args, **kwargs)`` is the loss: the negative ELBO (or IWAE bound) of the
    minibatch at the full-data scale :math:`N/B` (``num_data=N`` among the keywords),
    differentiable in the program's parameters."""

    def __init__(self, body: nn.Module, elbo: ELBO, model: Callable[..., Any], guide: Callable[..., Any]) -> None:
        super().__init__()
        self.body = body
        self.elbo = elbo
        self.model = model
        self.guide = guide

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        # Pyro declares differentiable_loss only on the ELBO subclasses, not on the ELBO base class
        return self.elbo.differentiable_loss(self.model, self.guide, *args, **kwargs)  # type: ignore[attr-defined]


class Objective:
    """The ELBO a run optimizes, its KL weight and, for JIT objectives, their compilation."""

    def __init__(self, program: Program, config: TrainConfig) -> None:
        given = config.objective
        elbo = get_objective(given, config.num_particles) if isinstance(given, str) else given
        program.check_objective(elbo)
        self.program = program
        self.config = config
        self._pristine = copy.copy(elbo)  # uncompiled: what a JIT objective recompiles from
        self.model = kl_weighted(program.model, config.beta)
        self.guide = kl_weighted(program.guide, config.beta)
        self.module = ELBOLoss(program.module, elbo, self.model, self.guide)
        self._use(elbo)

    @property
    def elbo(self) -> ELBO:
        """The :class:`pyro.infer.ELBO` instance in use."""
        return self.module.elbo

    @property
    def jit(self) -> bool:
        """Whether the objective is JIT-compiled (:attr:`TrainConfig.jit <pyro_vae.training.config.TrainConfig.jit>`)."""
        return self.config.jit

    @property
    def beta(self) -> float:
        """The KL weight the next steps use."""
        return self.model.beta

    def _use(self, elbo: ELBO) -> None:
        self.module.elbo = elbo
        #: JIT-compiled objectives find the parameters to trace through the param store,
        #: so only they need Pyro's param-store registration (see pyro_vae.models.plate).
        self.skip_registration = not self.jit
        self._compiled_sizes: Set[int] = set()
        self._owned: List[Tuple[str, torch.Tensor]] = []

    def set_elbo(self, elbo: ELBO) -> None:
        """Optimize ``elbo`` from the next step on: a schedule that changes the objective during a
        run (:class:`~pyro_vae.training.budget.TimeBudget`'s final phase). The KL weight stays."""
        self.program.check_objective(elbo)
        self._pristine = copy.copy(elbo)
        self._use(elbo)

    def set_beta(self, beta: float) -> None:
        """Weight the KL term by ``beta`` from the next step on; a JIT objective, which has the
        weight compiled in, is recompiled from its uncompiled copy."""
        beta = check_beta(beta)
        if self.jit and beta != self.model.beta:
            self._use(copy.copy(self._pristine))
        self.model.beta = self.guide.beta = beta

    def check_model(self, batch: Batch) -> None:
        """Refuse a mean-field objective (closed-form KL per site) for a model whose latent sites
        the guide samples in another order than the model: Pyro's ``TraceMeanField_ELBO`` would
        only warn, and its KL of a site conditioned on a later one would be biased (the
        two-layer HVAE's top-down model against its bottom-up guide)."""
        if not self.config.analytic_kl:
            return
        with rng_fork(0), torch.no_grad(), pyro.validation_enabled(False):
            guide_trace = poutine.trace(poutine.block(self.program.guide, hide_types=["param"])).get_trace(
                *batch.args, **batch.kwargs
            )
            model_trace = poutine.trace(poutine.replay(self.program.model, trace=guide_trace)).get_trace(
                *batch.args, **batch.kwargs
            )
        allowed = analytic_kl_allowed(latent_sites(model_trace), latent_sites(guide_trace))
        biased = [name for name, ok in allowed.items() if not ok]
        if biased:
            raise ConfigError(
                f"objective {self.config.objective_name!r} computes each latent site's KL in closed form, "
                f"which is biased for site(s) {biased}: the guide samples them before sites the model "
                f"conditions them on; use objective='elbo' (or 'iwae') for this model",
                settings=("objective",),
            )

    def loss_and_grads(self, batch: Batch, num_data: Optional[int]) -> torch.Tensor:
        """For an ELBO without ``differentiable_loss``: its own ``loss_and_grads``."""
        # Pyro declares loss_and_grads only on the ELBO subclasses, not on the ELBO base class
        loss = batch.call(lambda *a, **k: self.elbo.loss_and_grads(self.model, self.guide, *a, **k), num_data)  # type: ignore[attr-defined]
        return torch.tensor(float(loss))

    # ---- JIT compilation -------------------------------------------------------------

    def compile_for(
        self,
        batch_of: Callable[[int], Batch],
        num_data: Optional[int],
        sizes: Iterable[int],
        zero_grads: Callable[[], None],
    ) -> None:
        """Compile a JIT objective and run it to its final optimized form for every batch size
        about to be used (``batch_of(b)``, a prepared batch of ``b``), on the warm-up RNG stream
        and with the gradients discarded: the training steps then draw the same noise and run
        the same kernels whether a run started here or was resumed here (bit-identical resume).
        A no-op for other objectives."""
        sizes = [b for b in sizes if b not in self._compiled_sizes]
        if not self.jit or not sizes:
            return
        try:
            with rng_fork(jit_warmup_seed(self.config.seed)), pyro.validation_enabled(False):
                for b in sizes:
                    batch = batch_of(b)
                    for _ in range(3):  # profile, optimize, run optimized
                        batch.call(self.module, num_data).backward()
                    self._compiled_sizes.add(b)
        finally:
            zero_grads()
        # The compiled objective reads the parameters from the global param store by name at
        # every call: remember which entries are ours (see claim_param_store).
        mine = {id(p) for p in self.program.module.parameters()}
        self._owned = [(name, value) for name, value in pyro.get_param_store()._params.items() if id(value) in mine]

    def claim_param_store(self, batch: Batch, num_data: Optional[int]) -> None:
        """JIT objectives: if another model with the same parameter names registered since (two
        VAEs named "vae" trained in turns), run model and guide once, which puts this VAE's
        tensors back under those names -- else the compiled objective would use the other's."""
        if not self.jit:
            return
        store = pyro.get_param_store()._params
        if all(store.get(name) is value for name, value in self._owned):
            return
        with rng_fork(0), torch.no_grad(), pyro.validation_enabled(False):
            batch.call(poutine.block(self.guide), num_data)
            batch.call(poutine.block(self.model), num_data)
