r"""The evidence lower bound, per datapoint, split into reconstruction and the KL of each latent site (seed items 7-9).

For a model with observed sites :math:`x` and latent sites :math:`z_1, \dots, z_L` inside
the plate over datapoints, and a guide sampling the same latent sites,

.. math::

    \mathrm{ELBO}_i = \mathbb E_{q(z|x_i)}\big[\log p(x_i, z) - \log q(z|x_i)\big]
    = \underbrace{\mathbb E_q[\log p(x_i|z)]}_{\text{reconstruction}}
    - \sum_{l=1}^L \underbrace{\mathbb E_q\big[\log q(z_l|\cdot) - \log p(z_l|\mathrm{pa}_l)\big]}_{\mathrm{KL}_l}
    \le \log p(x_i),

where :math:`q(z_l|\cdot)` conditions on what the guide sampled before :math:`z_l` and
:math:`p(z_l|\mathrm{pa}_l)` on what the model sampled before it. For the VAE (one site
``"z"`` under :math:`\mathcal N(0, I)`) the single term is :math:`\mathrm{KL}(q(z|x_i)\|p(z))`;
for a hierarchy :math:`p(z_2)p(z_1|z_2)p(x|z_1)` with guide :math:`q(z_1|x)q(z_2|z_1)` it
is one term per layer. The sites are found from the traces (:mod:`pyro_vae.inference.sites`), so
their names are free.

:func:`elbo_terms` returns these per datapoint (no minibatch scaling), in nats.
:math:`\mathrm{KL}_l` is analytic, :math:`\mathbb E_{q(z_l|\cdot)}` in closed form at the
sampled conditioning values, when ``torch.distributions`` knows it for the two
distributions *and* every site the model samples before :math:`z_l` is also sampled before
it by the guide (so :math:`p(z_l|\mathrm{pa}_l)` does not depend on :math:`z_l` through the
guide; Pyro's ``TraceMeanField_ELBO`` asks the same). Otherwise it is the Monte Carlo
estimate :math:`\log q(z_l|\cdot) - \log p(z_l|\mathrm{pa}_l)` at the same samples: always
for the lower layer of a bottom-up guide, and for a learned mixture prior (VampPrior).
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Sequence, Union, cast

import torch
from pyro import poutine
from pyro.poutine.runtime import Message
from torch.distributions import Distribution, kl_divergence

from pyro_vae.errors import check_positive
from pyro_vae.inference.sites import SiteError, check_latent_match, frame_named, latent_sites, model_sites


class ELBOTerms(NamedTuple):
    """Per-datapoint parts of the ELBO, each a tensor of shape ``[batch]`` in nats."""

    recon: torch.Tensor  #: E_q[log p(x|z)], all observed sites
    kl: torch.Tensor  #: the sum of the latent sites' KL terms (KL(q(z|x) || p(z)) for the VAE)
    elbo: torch.Tensor  #: recon - kl
    #: the KL term of each latent site, by name, in the order the model samples them
    kl_sites: Mapping[str, torch.Tensor] = MappingProxyType({})

    def bits_per_dim(self, x_dim: int) -> torch.Tensor:
        """The negative ELBO in bits per pixel: ``-elbo / (x_dim ln 2)``."""
        return bits_per_dim(self.elbo, x_dim)


def bits_per_dim(elbo_nats: torch.Tensor, x_dim: int) -> torch.Tensor:
    """Convert a per-datapoint ELBO (nats) to bits per dimension, ``-elbo / (x_dim ln 2)``."""
    return -elbo_nats / (x_dim * math.log(2.0))


def per_datapoint(value: torch.Tensor, site: Message, name: str, plate: str, role: str) -> torch.Tensor:
    """A site's log-density (or KL) reduced to one number per datapoint of plate ``plate``:
    summed over every other batch dimension (plates inside the data plate)."""
    frame = frame_named(site, plate)
    if frame is None:
        raise SiteError(
            f"site {name!r} of the {role} is not inside plate {plate!r}, the plate over datapoints; "
            f"the ELBO is split per datapoint, so every sample site must be inside it"
        )
    dims = -frame.dim
    if value.dim() < dims:
        value = value.reshape((1,) * (dims - value.dim()) + tuple(value.shape))
    value = value.movedim(frame.dim, 0)
    return value.reshape(value.shape[0], -1).sum(1).expand(frame.size)


def analytic_kl_allowed(model_latent: Sequence[str], guide_latent: Sequence[str]) -> Dict[str, bool]:
    """For each latent site, whether a closed-form KL at the sampled conditioning values is an
    unbiased ELBO term: every site the model samples before it, the guide samples before it too."""
    guide_position = {name: i for i, name in enumerate(guide_latent)}
    allowed = {}
    for i, name in enumerate(model_latent):
        allowed[name] = all(guide_position[earlier] < guide_position[name] for earlier in model_latent[:i])
    return allowed


def elbo_terms(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    *args: Any,
    num_particles: int = 1,
    analytic_kl: bool = True,
    plate: Optional[str] = None,
    **kwargs: Any,
) -> ELBOTerms:
    r"""Estimate :math:`\mathbb E_q[\log p(x_i|z)]`, the KL term of every latent site, and the ELBO.

    The guide is run on ``*args, **kwargs``; the model is replayed on its sample of every
    latent site; the log-densities are read off the two traces, summed over event
    dimensions and over any plate inside the data plate, so each result has the batch
    shape ``[B]``. The observed sites, the latent sites and the data plate are found from
    the model's trace (:mod:`pyro_vae.inference.sites`; ``plate`` names the data plate where the
    outermost plate is not it). ``num_particles`` samples per datapoint are averaged.

    :param analytic_kl: use closed-form KL terms where valid (see the module docstring);
        ``False`` gives the plain Monte Carlo split, whose per-sample sum is exactly
        :math:`\log p(x_i, z) - \log q(z|x_i)`.
    :raises SiteError: the guide lacks a latent site of the model or samples one the model lacks.
    """
    check_positive("num_particles", num_particles, example=5)
    recon: Optional[torch.Tensor] = None
    kl_sites: Dict[str, torch.Tensor] = {}
    for _ in range(num_particles):
        guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
        sites = model_sites(model_trace, plate)
        check_latent_match(model_trace, guide_trace)
        allowed = analytic_kl_allowed(sites.latent, latent_sites(guide_trace))
        particle_recon: Union[float, torch.Tensor] = 0.0
        for name in sites.observed:
            site = model_trace.nodes[name]
            fn, value = cast(Distribution, site["fn"]), cast(torch.Tensor, site["value"])
            particle_recon = particle_recon + per_datapoint(fn.log_prob(value), site, name, sites.plate, "model")
        # a tensor: model_sites raised if the model observes nothing
        recon = cast(torch.Tensor, particle_recon) if recon is None else recon + particle_recon
        for name in sites.latent:
            q_site, p_site = guide_trace.nodes[name], model_trace.nodes[name]
            q_fn, p_fn = cast(Distribution, q_site["fn"]), cast(Distribution, p_site["fn"])
            kl_value = None
            if analytic_kl and allowed[name]:
                try:
                    kl_value = kl_divergence(q_fn, p_fn)
                except NotImplementedError:
                    kl_value = None  # no closed form registered: fall back to Monte Carlo
            if kl_value is None:
                z = cast(torch.Tensor, q_site["value"])
                kl_value = q_fn.log_prob(z) - p_fn.log_prob(z)
            kl_value = per_datapoint(kl_value, p_site, name, sites.plate, "model")
            kl_sites[name] = kl_sites[name] + kl_value if name in kl_sites else kl_value
    assert recon is not None  # num_particles >= 1 particles were drawn
    recon = recon / num_particles
    kl_sites = {name: value / num_particles for name, value in kl_sites.items()}
    kl = cast(torch.Tensor, sum(kl_sites.values())) if kl_sites else torch.zeros_like(recon)
    return ELBOTerms(recon=recon, kl=kl, elbo=recon - kl, kl_sites=kl_sites)
