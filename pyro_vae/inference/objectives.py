r"""Training objectives, selectable by name, and KL weighting.

* ``"elbo"`` -- :class:`pyro.infer.Trace_ELBO`: the ELBO with a Monte Carlo KL (seed item 8).
* ``"meanfield"`` -- :class:`pyro.infer.TraceMeanField_ELBO`: the same bound with the
  KL term in closed form where ``torch.distributions`` knows it (lower variance).
* ``"iwae"`` -- :class:`IWAE_ELBO`: the importance-weighted bound
  :math:`\mathcal L_K = \mathbb E\big[\log \tfrac1K \sum_k w_{ik}\big]` of Burda, Grosse
  & Salakhutdinov (2015), per datapoint and with the minibatch scale ``N/B``.
* ``"jit_elbo"``, ``"jit_meanfield"`` -- Pyro's JIT-compiled variants of the first two.

:func:`kl_weighted` scales every latent site (in model and guide) by ``beta``
through a Pyro messenger: the ELBO becomes
:math:`\mathbb E_q[\log p(x|z)] - \beta \sum_l \mathrm{KL}_l` over the latent sites
:math:`z_l` (one, ``"z"``, for the VAE: :math:`\beta\,\mathrm{KL}(q(z|x)\|p(z))`; beta-VAE,
Higgins et al. 2017; with beta rising from 0 to 1, KL warm-up, Sønderby et al. 2016).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Collection, Dict, FrozenSet, Optional, Protocol, cast

import pyro
import torch
from pyro.infer import JitTrace_ELBO, JitTraceMeanField_ELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.elbo import ELBO
from pyro.poutine.runtime import Message

from pyro_vae.errors import ConfigError
from pyro_vae.inference.importance import log_importance_weights


class IWAE_ELBO(ELBO):
    r"""The importance-weighted bound :math:`\mathcal L_K`, per datapoint (Burda et al., 2015).

    .. math::

        \mathcal L_K = \sum_i \mathbb E_{z_{i1..iK} \sim q}
        \Big[\log \frac1K \sum_{k=1}^K \frac{p(x_i, z_{ik})}{q(z_{ik}|x_i)}\Big]
        \;\le\; \sum_i \log p(x_i),

    the sum over a minibatch scaled by ``N/B``. :math:`\mathcal L_1` is the ELBO and
    :math:`\mathcal L_K` rises with :math:`K`. The :math:`K` particles are vectorized.

    Pyro's ``RenyiELBO(alpha=0)`` computes the same per-datapoint bound on a full
    batch, but its loss does not scale a subsampled plate by ``N/B`` correctly, so
    minibatch figures are not full-data estimates; this class does.

    :param num_particles: :math:`K`.
    """

    def __init__(self, num_particles: int = 5) -> None:
        super().__init__(num_particles=num_particles, max_plate_nesting=2)

    def _get_trace(self, model, guide, args, kwargs):  # pragma: no cover - traces are built in bound()
        raise NotImplementedError("IWAE_ELBO builds its vectorized traces in bound()")

    def bound(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The differentiable estimate of :math:`\\mathcal L_K` (full-data scale)."""
        log_w, data_scale = log_importance_weights(
            model, guide, *args, num_particles=self.num_particles, relative_scale=True, **kwargs
        )
        per_datapoint = torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)
        return data_scale * per_datapoint.sum()

    def differentiable_loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> torch.Tensor:
        return -self.bound(model, guide, *args, **kwargs)

    def loss(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model: Callable, guide: Callable, *args: Any, **kwargs: Any) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return float(loss.detach())


#: The objectives by name: each builds a fresh ``pyro.infer`` ELBO given ``num_particles``.
OBJECTIVES: Dict[str, Callable[..., ELBO]] = {
    "elbo": lambda num_particles=1: Trace_ELBO(
        num_particles=num_particles, vectorize_particles=num_particles > 1, max_plate_nesting=1
    ),
    "meanfield": lambda num_particles=1: TraceMeanField_ELBO(
        num_particles=num_particles, vectorize_particles=num_particles > 1, max_plate_nesting=1
    ),
    "iwae": lambda num_particles=5: IWAE_ELBO(num_particles=num_particles),
    "jit_elbo": lambda num_particles=1: JitTrace_ELBO(
        num_particles=num_particles,
        vectorize_particles=num_particles > 1,
        max_plate_nesting=1,
        ignore_jit_warnings=True,
    ),
    "jit_meanfield": lambda num_particles=1: JitTraceMeanField_ELBO(
        num_particles=num_particles,
        vectorize_particles=num_particles > 1,
        max_plate_nesting=1,
        ignore_jit_warnings=True,
    ),
}
#: Pyro's class names are accepted too.
ALIASES = {
    "Trace_ELBO": "elbo",
    "TraceMeanField_ELBO": "meanfield",
    "JitTrace_ELBO": "jit_elbo",
    "JitTraceMeanField_ELBO": "jit_meanfield",
    "IWAE": "iwae",
    "IWAE_ELBO": "iwae",
}


def objective_name(objective: ELBO) -> str:
    """The name of an objective instance: its key in :data:`OBJECTIVES` for the classes
    listed there, else its class name (what checkpoints record)."""
    return ALIASES.get(type(objective).__name__, type(objective).__name__)


def is_jit(objective: ELBO) -> bool:
    """Whether ``objective`` is one of Pyro's JIT-compiled ELBOs (compiled at first use)."""
    return type(objective).__name__.startswith("Jit")


def get_objective(name: str, num_particles: Optional[int] = None) -> ELBO:
    """The objective called ``name`` (see this module), with ``num_particles`` samples.

    For ``"iwae"`` ``num_particles`` is :math:`K` (default 5); for the ELBOs it is the
    number of averaged particles (default 1).
    """
    key = ALIASES.get(name, name)
    if key not in OBJECTIVES:
        raise ConfigError(
            f"unknown objective {name!r}; choose one of {sorted(OBJECTIVES)} (or Pyro's class names {sorted(ALIASES)})"
        )
    if num_particles is None:
        return OBJECTIVES[key]()
    if isinstance(num_particles, bool) or not isinstance(num_particles, int) or num_particles < 1:
        raise ConfigError(
            f"num_particles must be a positive integer, got {num_particles!r}; pass e.g. "
            f"num_particles=5, or None for the objective's default",
            settings=("num_particles",),
        )
    return OBJECTIVES[key](num_particles)


class scale_site(pyro.poutine.messenger.Messenger):
    """Multiply the log-density of the sample site ``name`` by ``scale`` (others untouched)."""

    def __init__(self, name: str, scale: float) -> None:
        super().__init__()
        self.name = name
        self.scale = scale

    def _process_message(self, msg: Message) -> None:
        if msg["type"] == "sample" and msg["name"] == self.name:
            msg["scale"] = self.scale * msg["scale"]


class scale_latent(pyro.poutine.messenger.Messenger):
    """Multiply the log-density of every latent sample site by ``scale``: every sample site
    not observed (``obs=`` not given) and not a plate's subsample site, or only those named
    in ``sites``. Observed sites (the data, ``pyro.factor``) are untouched."""

    def __init__(self, scale: float, sites: Optional[Collection[str]] = None) -> None:
        super().__init__()
        self.scale = scale
        self.sites = None if sites is None else frozenset(sites)

    def _process_message(self, msg: Message) -> None:
        if msg["type"] != "sample" or msg["is_observed"] or type(msg["fn"]).__name__ == "_Subsample":
            return
        if self.sites is None or msg["name"] in self.sites:
            msg["scale"] = self.scale * msg["scale"]


class KLWeighted(Protocol):
    """What :func:`kl_weighted` returns: the model or guide, with its KL weight ``beta`` and ``sites``."""

    beta: float
    sites: Optional[FrozenSet[str]]

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...


def kl_weighted(fn: Callable[..., Any], beta: float, sites: Optional[Collection[str]] = None) -> KLWeighted:
    r"""Run ``fn`` (a model or guide) with the log-density of every latent site scaled by ``beta``.

    Applied to both model and guide, the ELBO's :math:`\sum_l \log p(z_l|\mathrm{pa}_l) -
    \log q(z_l|\cdot)` terms, hence the KL of every latent site, are weighted by ``beta``;
    the reconstruction (the observed sites) is not:

    .. math::

        \mathcal L_\beta = \mathbb E_q[\log p(x|z)] - \beta \sum_l \mathrm{KL}_l .

    The latent sites are recognized per sample statement (not observed, not a plate's
    subsample site), so any model works: the VAE's ``"z"``, a hierarchy's ``"z1"`` and
    ``"z2"``, a tutorial's ``"latent"``. ``sites`` restricts the weight to the named sites.
    ``beta`` may be changed later through the returned function's ``beta`` attribute
    (KL warm-up).
    """
    names = None if sites is None else frozenset(sites)

    def weighted(*args: Any, **kwargs: Any) -> Any:
        if kl.beta == 1.0:
            return fn(*args, **kwargs)
        with scale_latent(kl.beta, names):
            return fn(*args, **kwargs)

    kl = cast(KLWeighted, weighted)  # the same function, with the attributes set below
    kl.beta = check_beta(beta)
    kl.sites = names
    return kl


def check_beta(beta: float) -> float:
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (beta >= 0 and math.isfinite(beta)):
        raise ConfigError(
            f"beta must be a finite number >= 0, got {beta!r}; pass e.g. beta=1.0 (the ELBO)", settings=("beta",)
        )
    return float(beta)
