r"""The evidence lower bound, per datapoint and in its two parts (seed items 7-9).

For a model with latent site ``"z"`` and observed site ``"x"`` in plate ``"data"``,

.. math::

    \mathrm{ELBO}_i = \mathbb E_{q(z|x_i)}[\log p(x_i|z)] - \mathrm{KL}(q(z|x_i)\,\|\,p(z))
    = \mathbb E_q[\log p(x_i, z) - \log q(z|x_i)] \le \log p(x_i).

:func:`elbo_terms` returns these per datapoint (no minibatch scaling), in nats.
The KL part is analytic when ``torch.distributions`` knows it for the guide's and
prior's distributions, and a Monte Carlo estimate :math:`\log q(z|x) - \log p(z)`
at the same samples otherwise.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch.distributions import kl_divergence

from .errors import check_positive


class ELBOTerms(NamedTuple):
    """Per-datapoint parts of the ELBO, each a tensor of shape ``[batch]`` in nats."""

    recon: torch.Tensor  #: E_q[log p(x|z)]
    kl: torch.Tensor  #: KL(q(z|x) || p(z))
    elbo: torch.Tensor  #: recon - kl

    def bits_per_dim(self, x_dim: int) -> torch.Tensor:
        """The negative ELBO in bits per pixel: ``-elbo / (x_dim ln 2)``."""
        return bits_per_dim(self.elbo, x_dim)


def bits_per_dim(elbo_nats: torch.Tensor, x_dim: int) -> torch.Tensor:
    """Convert a per-datapoint ELBO (nats) to bits per dimension, ``-elbo / (x_dim ln 2)``."""
    return -elbo_nats / (x_dim * math.log(2.0))


def _site(trace, name: str, role: str):
    if name not in trace.nodes or trace.nodes[name]["type"] != "sample":
        raise ValueError(f"the {role} has no sample site {name!r}")
    return trace.nodes[name]


def _only_z_latent(trace, role: str) -> None:
    extra = [
        name
        for name, site in trace.nodes.items()
        if site["type"] == "sample"
        and not site["is_observed"]
        and not site_is_subsample(site)
        and name != "z"
    ]
    if extra:
        raise ValueError(
            f"the {role} has latent sites {extra} besides 'z'; elbo_terms decomposes the ELBO of "
            f"the VAE's single latent site 'z' only"
        )


def elbo_terms(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    *args: Any,
    num_particles: int = 1,
    analytic_kl: bool = True,
    **kwargs: Any,
) -> ELBOTerms:
    r"""Estimate :math:`\mathbb E_q[\log p(x_i|z)]`, :math:`\mathrm{KL}(q(z|x_i)\|p(z))` and their difference.

    The guide is run on ``*args, **kwargs``; the model is replayed on its sample
    of ``"z"``; the log-densities of sites ``"x"`` and ``"z"`` are read off the two
    traces, summed over event dimensions only, so each result has the plate's
    batch shape. ``num_particles`` samples of ``z`` per datapoint are averaged.

    Only the sites ``"z"`` and ``"x"`` enter: this is the ELBO of the VAE's
    one-latent structure, and a model or guide with other latent sites is refused.
    """
    check_positive("num_particles", num_particles, example=5)
    recon = kl = 0.0
    for _ in range(num_particles):
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
            *args, **kwargs
        )
        q_site = _site(guide_trace, "z", "guide")
        p_site = _site(model_trace, "z", "model")
        x_site = _site(model_trace, "x", "model")
        _only_z_latent(guide_trace, "guide")
        _only_z_latent(model_trace, "model")
        recon = recon + x_site["fn"].log_prob(x_site["value"])
        kl_i = None
        if analytic_kl:
            try:
                kl_i = kl_divergence(q_site["fn"], p_site["fn"])
            except NotImplementedError:
                kl_i = None  # no closed form registered: fall back to Monte Carlo
        if kl_i is None:
            z = q_site["value"]
            kl_i = q_site["fn"].log_prob(z) - p_site["fn"].log_prob(z)
        kl = kl + kl_i
    recon = recon / num_particles
    kl = kl / num_particles
    return ELBOTerms(recon=recon, kl=kl, elbo=recon - kl)
