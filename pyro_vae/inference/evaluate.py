r"""Evaluating a fitted VAE: test log-likelihood, active units, KL per latent dimension.

:func:`log_likelihood` is the importance-sampled estimate of Burda et al. (2015),

.. math::

    \log \hat p(x_i) = \log \frac1K \sum_{k=1}^K \frac{p(x_i, z_{ik})}{q(z_{ik}|x_i)},
    \qquad z_{ik} \sim q(z|x_i),

per datapoint (the guide is the proposal; :math:`K = 5000` in the paper). It is a
stochastic lower bound of :math:`\log p(x_i)` in expectation (the IWAE bound
:math:`\mathcal L_K`) and consistent as :math:`K \to \infty`. Its spread is reported
through the effective sample size :math:`\mathrm{ESS}_i = (\sum_k w_{ik})^2 / \sum_k w_{ik}^2`
and the delta-method standard error :math:`\sqrt{1/\mathrm{ESS}_i - 1/K}` of
:math:`\log \hat p(x_i)`. Memory stays bounded: data and particles are processed in
chunks, and the chunks' log-weights are merged with running log-sum-exps. What depends on
no particle (a learned prior's mixture) is built once per call (:func:`pyro_vae.models.priors.cached_priors`).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, NamedTuple, Optional

import pyro
import torch
from pyro import poutine
from pyro.infer.util import is_validation_enabled
from torch.distributions import kl_divergence

from pyro_vae.errors import check_positive
from pyro_vae.inference.importance import log_importance_weights
from pyro_vae.inference.sites import SiteError, choose_latent, is_latent, latent_sites
from pyro_vae.models.plate import registration_skipped
from pyro_vae.models.priors import cached_priors


class LogLikelihood(NamedTuple):
    """Per-datapoint importance-sampled log-likelihood, in nats."""

    log_likelihood: torch.Tensor  #: log p̂(x_i), shape [N]
    stderr: torch.Tensor  #: delta-method standard error of log p̂(x_i)
    ess: torch.Tensor  #: effective sample size of the K importance weights
    num_samples: int  #: K

    def nll(self) -> float:
        """Mean negative log-likelihood per datapoint (the figure papers report)."""
        return -float(self.log_likelihood.mean())

    def nll_stderr(self) -> float:
        r"""The Monte Carlo standard error of :meth:`nll`, :math:`\sqrt{\sum_i \mathrm{se}_i^2} / N`
        from the datapoints' independent importance estimates: how far another draw of particles
        could move the mean, not how far another training run could."""
        return float(self.stderr.pow(2).mean().sqrt() / len(self.stderr) ** 0.5)


@torch.no_grad()
def log_likelihood(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    x: torch.Tensor,
    num_samples: int = 5000,
    batch_size: int = 10,
    particles_per_chunk: Optional[int] = None,
    max_elements: int = 5_000,
    progress: Optional[Callable[[int], None]] = None,
    plate: Optional[str] = None,
) -> LogLikelihood:
    """Importance-sampled :math:`\\log p(x_i)` for every row of ``x``, for any model/guide pair
    called as ``model(x)``, ``guide(x)``: the observed and latent sites (any names, any
    number of latent sites) and the plate over datapoints are read off the traces
    (:mod:`pyro_vae.inference.sites`).

    :param num_samples: :math:`K`, importance samples per datapoint.
    :param batch_size: datapoints per chunk. Few, so that a chunk holds many particles of
        each: the guide encodes a chunk's datapoints once per chunk of particles, and the
        VampPrior's density runs in float32 about each datapoint's centre, with that
        datapoint's own slopes (:class:`~pyro_vae.models.mixture.DiagonalNormalMixture`).
    :param particles_per_chunk: particles per chunk; by default as many as keep
        ``particles x datapoints <= max_elements`` (peak memory is about
        ``max_elements x x_dim x 4 bytes x`` a small constant). The default keeps a
        chunk's ``[particles, datapoints, 784]`` tensors (15.7 MB) in the CPU's caches:
        faster than chunks ten times larger (``bench/loglik.py`` times the default). Pyro's
        validation (if on) checks the first particle chunk of every data chunk, which sees
        every datapoint; the other chunks redraw only ``z`` and skip it.
    :param progress: called with the number of datapoints finished after each data chunk.
    :param plate: the name of the plate over datapoints, for a model with several plates
        around its data whose outermost is not it (default: ``"data"``, else the outermost).
    """
    check_positive("num_samples", num_samples, example=5000)
    check_positive("batch_size", batch_size, example=100)
    with cached_priors():  # a learned prior depends on no particle: built once, not per chunk
        return _log_likelihood(
            model, guide, x, num_samples, batch_size, particles_per_chunk, max_elements, progress, plate
        )


def _log_likelihood(
    model, guide, x, num_samples, batch_size, particles_per_chunk, max_elements, progress, plate
) -> LogLikelihood:
    n = x.shape[0]
    out_ll, out_se, out_ess = [], [], []
    for start in range(0, n, batch_size):
        batch = x[start : start + batch_size]
        b = batch.shape[0]
        chunk = particles_per_chunk or max(1, min(num_samples, max_elements // b))
        log_sum = torch.full((b,), -math.inf, dtype=x.dtype, device=x.device)
        log_sum_sq = log_sum.clone()
        done = 0
        while done < num_samples:
            k = min(chunk, num_samples - done)
            with pyro.validation_enabled(is_validation_enabled() and done == 0), registration_skipped():
                log_w, _ = log_importance_weights(model, guide, batch, num_particles=k, plate=plate)
            log_sum = torch.logaddexp(log_sum, torch.logsumexp(log_w, 0))
            log_sum_sq = torch.logaddexp(log_sum_sq, torch.logsumexp(2 * log_w, 0))
            done += k
        ess = torch.exp(2 * log_sum - log_sum_sq)
        out_ll.append(log_sum - math.log(num_samples))
        out_ess.append(ess)
        out_se.append(torch.sqrt((1.0 / ess - 1.0 / num_samples).clamp(min=0.0)))
        if progress is not None:
            progress(min(start + batch_size, n))
    return LogLikelihood(torch.cat(out_ll), torch.cat(out_se), torch.cat(out_ess), num_samples)


def distribution_mean(q: Any, num_samples: int = 64) -> torch.Tensor:
    """The mean of ``q``: exact where it has one (Gaussians), else the average of
    ``num_samples`` draws (normalizing flows have no closed-form mean)."""
    try:
        return q.mean
    except NotImplementedError:
        return q.rsample((num_samples,)).mean(0)


@torch.no_grad()
def posterior_means(
    guide: Callable[..., Any], x: torch.Tensor, batch_size: int = 1000, site: Optional[str] = None
) -> torch.Tensor:
    """:math:`\\mathbb E_q[z|x_i]` for every row of ``x``, shape ``[N, z_dim]`` (see :func:`distribution_mean`).

    :param site: the latent site whose means to return; by default the guide's only latent
        site (``"z"`` for the VAE), and required when the guide samples several (a hierarchy:
        ``site="z1"`` or ``site="z2"``).
    """
    means = []
    for batch in x.split(batch_size):
        trace = poutine.trace(guide).get_trace(batch)
        means.append(distribution_mean(trace.nodes[choose_latent(trace, site)]["fn"]))
    return torch.cat(means)


class PrincipalPlane(NamedTuple):
    """The plane through the average of posterior means along their first two principal axes."""

    centre: torch.Tensor  #: m, the average of the means, ``[z_dim]``
    axes: torch.Tensor  #: v1, v2 as orthonormal rows, ``[2, z_dim]``
    explained: List[float]  #: the fraction of the means' variance along each axis

    def project(self, means: torch.Tensor) -> torch.Tensor:
        """Coordinates ``(means - m) @ axes^T`` in the plane, ``[N, 2]``."""
        return (means - self.centre) @ self.axes.T


def principal_plane(means: torch.Tensor) -> Optional[PrincipalPlane]:
    """The first two principal axes of posterior means ``[N, z_dim]`` (``z_dim >= 2``), for
    maps of the latent space; ``None`` where there is no spread to show: fewer than 2 means,
    or all equal up to rounding."""
    centre = means.mean(0)
    centred = means - centre
    _, s, v = torch.linalg.svd(centred, full_matrices=False)
    total = (s**2).sum()
    if len(means) < 2 or total <= 1e-10 * means.pow(2).sum():
        return None
    return PrincipalPlane(centre, v[:2], (s[:2] ** 2 / total).tolist())


def active_units(means: torch.Tensor, threshold: float = 0.01) -> torch.Tensor:
    r"""Burda et al.'s activity of each latent dimension: :math:`A_d = \mathrm{Cov}_x(\mathbb E_q[z_d|x]) > 0.01`.

    :param means: posterior means ``[N, z_dim]`` (see :func:`posterior_means`).
    :returns: a boolean mask ``[z_dim]``; ``.sum()`` counts the active units.
    """
    return means.var(0) > threshold


@torch.no_grad()
def active_units_per_site(
    guide: Callable[..., Any], x: torch.Tensor, threshold: float = 0.01, batch_size: int = 1000
) -> Dict[str, torch.Tensor]:
    r""":func:`active_units` of every latent site of ``guide``, by name, in the guide's order.

    The sites are read off a trace of the guide (:mod:`pyro_vae.inference.sites`): ``{"z": mask}`` for
    the VAE, ``{"z1": ..., "z2": ...}`` for a two-layer model, whose units Burda et al.
    count per layer. Each site's posterior means come from :func:`posterior_means`.
    """
    names = latent_sites(poutine.trace(guide).get_trace(x[:1]))
    return {name: active_units(posterior_means(guide, x, batch_size, site=name), threshold) for name in names}


@torch.no_grad()
def kl_per_dimension(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    x: torch.Tensor,
    batch_size: int = 1000,
    site: Optional[str] = None,
) -> torch.Tensor:
    r"""Mean :math:`\mathrm{KL}(q(z_d|x)\,\|\,p(z_d))` of each latent dimension, ``[z_dim]`` nats.

    Defined for factorized Gaussian guides and priors (``Normal(...).to_event(1)``),
    where the KL splits into a sum over dimensions. For a latent site whose prior is
    conditional (the lower layer of a hierarchy, :math:`p(z_1|z_2)`), the prior is the one
    the model builds from the guide's sample of the site's parents: a one-sample estimate.

    :param site: the latent site; by default the guide's only one (required when the guide
        samples several).
    """
    total = None
    for batch in x.split(batch_size):
        guide_trace = poutine.trace(guide).get_trace(batch)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(batch)
        name = choose_latent(guide_trace, site)
        if name not in model_trace.nodes or not is_latent(model_trace.nodes[name]):
            raise SiteError(f"the guide samples latent site {name!r} but the model has no latent site {name!r}")
        q, p = guide_trace.nodes[name]["fn"], model_trace.nodes[name]["fn"]
        q_base, p_base = getattr(q, "base_dist", None), getattr(p, "base_dist", None)
        if q_base is None or type(q_base).__name__ != "Normal":
            raise ValueError(
                f"KL per dimension needs a factorized Normal guide; this guide's q({name}|x) is {type(q).__name__}"
            )
        if p_base is None or type(p_base).__name__ != "Normal":
            raise ValueError(
                f"KL per dimension needs a factorized Normal prior; the model's p({name}) is "
                f"{type(p).__name__}, whose KL does not split over dimensions"
            )
        kl = kl_divergence(q_base, p_base).reshape(-1, q_base.batch_shape[-1]).sum(0)
        total = kl if total is None else total + kl
    assert total is not None  # x.split gives at least one batch
    return total / x.shape[0]
