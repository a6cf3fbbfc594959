r"""Priors over the code: the fixed :math:`\mathcal N(0, I)` and the learned VampPrior.

The seed's model (item 5) puts :math:`p(z) = \mathcal N(0, I)` under the code. That is a
modelling choice, not part of the method: the ELBO

.. math::

    \mathcal L(x) = \mathbb E_{q(z|x)}[\log p(x|z)] - \mathrm{KL}\big(q(z|x)\,\|\,p_\lambda(z)\big)

is a bound for any prior, and a prior with parameters :math:`\lambda` can be learned by
ascending the same bound. The *aggregate posterior* :math:`q(z) = \frac1N \sum_n q(z|x_n)`
maximizes the bound's prior term over all priors (Hoffman & Johnson, 2016); the VampPrior
("variational mixture of posteriors", Tomczak & Welling, 2018) approximates it by a mixture
of the guide's own posteriors at :math:`K \ll N` learned *pseudo-inputs* :math:`u_k`,

.. math::

    p_\lambda(z) = \frac1K \sum_{k=1}^K q_\phi(z \mid u_k),
    \qquad \lambda = \{u_1, \dots, u_K\},

written here as a Pyro :class:`~pyro.distributions.MixtureSameFamily` of the encoder's
distributions at the pseudo-inputs (uniform mixture weights). The pseudo-inputs are images
with pixels :math:`u_{kd} = \mathrm{sigmoid}(\rho_{kd}) \in (0, 1)`, :math:`\rho` the
parameter; the encoder's parameters receive gradients from the prior as well as from the
guide.

With this prior :math:`\mathrm{KL}(q(z|x)\|p_\lambda(z))` has no closed form (the log of a
sum of Gaussians), so every ELBO in ``pyro_vae`` estimates it by Monte Carlo,
:math:`\log q(z|x) - \log p_\lambda(z)` at :math:`z \sim q(z|x)`:
:func:`~pyro_vae.inference.elbo.elbo_terms` and ``TraceMeanField_ELBO`` fall back to it
automatically. Each evaluation of :math:`\log p_\lambda(z)` costs :math:`K` Gaussian
densities; for a diagonal-Gaussian encoder they come from matrix products
(:class:`~pyro_vae.models.mixture.DiagonalNormalMixture`) instead of a ``[B, K, z_dim]``
tensor of squared distances.

Reference: Tomczak & Welling (2018), "VAE with a VampPrior", AISTATS.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional

import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution
from torch import nn

from pyro_vae.errors import ConfigError, check_positive
from pyro_vae.models.mixture import DiagonalNormalMixture

#: The priors a model chooses by name.
PRIORS = ("standard", "vamp")


def check_prior(prior: str) -> str:
    """``prior`` if it names a prior of :data:`PRIORS`, else a :class:`~pyro_vae.errors.ConfigError` listing them."""
    if prior not in PRIORS:
        raise ConfigError(f"unknown prior {prior!r}; choose one of {list(PRIORS)}", settings=("prior",))
    return prior


_CACHES: List[Dict[object, TorchDistribution]] = []


@contextmanager
def cached_priors() -> Iterator[None]:
    r"""Within the block, each :class:`VampPrior` builds :math:`p_\lambda(z)` once per encoder
    and reuses it, wherever gradients are off.

    The prior depends on the parameters alone, not on the data or the particles, yet a model
    builds it at every call: an importance-sampled log-likelihood (:func:`pyro_vae.inference.evaluate.log_likelihood`)
    calls the model thousands of times, each time encoding the ``K`` pseudo-inputs and
    preparing the mixture's density anew. Valid while the parameters do not change: an
    evaluation, not a training step.
    """
    _CACHES.append({})
    try:
        yield
    finally:
        _CACHES.pop()


def standard_normal(like: torch.Tensor, batch: int, z_dim: int) -> TorchDistribution:
    r""":math:`\mathcal N(0, I_{z_\mathrm{dim}})` for each of ``batch`` datapoints, in ``like``'s dtype and device."""
    return dist.Normal(like.new_zeros(()), like.new_ones(())).expand([batch, z_dim]).to_event(1)


class VampPrior(nn.Module):
    r"""The VampPrior :math:`p_\lambda(z) = \frac1K \sum_k q(z|u_k)` over ``K`` learned pseudo-inputs.

    The module holds only the pseudo-inputs; the encoder is passed to
    :meth:`distribution` by the model that owns both, so that the prior and the guide share
    it.

    :param num_pseudo_inputs: :math:`K` (Tomczak & Welling use 500 on MNIST).
    :param input_dim: the size of one pseudo-input: ``x_dim`` for the one-layer VAE, the
        input width of the encoder the prior is built from.
    :param init: optional ``[K, input_dim]`` starting pseudo-inputs with entries in (0, 1),
        e.g. training images; by default random pixels around 0.13, MNIST's average.
    """

    def __init__(self, num_pseudo_inputs: int, input_dim: int, init: Optional[torch.Tensor] = None) -> None:
        super().__init__()
        self.num_pseudo_inputs = check_positive("num_pseudo_inputs", num_pseudo_inputs, example=500)
        self.input_dim = check_positive("input_dim", input_dim, example=784)
        if init is None:
            raw = -1.9 + 0.3 * torch.randn(self.num_pseudo_inputs, self.input_dim)
        else:
            init = torch.as_tensor(init, dtype=torch.get_default_dtype())
            if init.shape != (self.num_pseudo_inputs, self.input_dim):
                raise ConfigError(
                    f"init must have shape [{self.num_pseudo_inputs}, {self.input_dim}] (one pseudo-input "
                    f"per row), got {tuple(init.shape)}",
                    settings=("num_pseudo_inputs",),
                )
            raw = torch.logit(init.clamp(1e-3, 1 - 1e-3))
        self.raw_pseudo_inputs = nn.Parameter(raw)

    def pseudo_inputs(self) -> torch.Tensor:
        r"""The pseudo-inputs :math:`u_k = \mathrm{sigmoid}(\rho_k)`, ``[K, input_dim]``."""
        return torch.sigmoid(self.raw_pseudo_inputs)

    def distribution(self, encode: Callable[[torch.Tensor], TorchDistribution]) -> dist.MixtureSameFamily:
        r""":math:`p_\lambda(z)` as a ``MixtureSameFamily``: batch shape ``()``, the encoder's event shape.

        :param encode: the guide's :math:`u \mapsto q(z|u)` on a batch of inputs, returning a
            distribution of batch shape ``[K]`` (e.g. :meth:`pyro_vae.models.guides.AmortizedGuide.distribution`).
        """
        if _CACHES and not torch.is_grad_enabled():
            key = (self, encode)  # a bound method compares equal to its twin: one entry per encoder
            if key not in _CACHES[-1]:
                _CACHES[-1][key] = self._build(encode)
            return _CACHES[-1][key]
        return self._build(encode)

    def _build(self, encode: Callable[[torch.Tensor], TorchDistribution]) -> dist.MixtureSameFamily:
        components = encode(self.pseudo_inputs())
        if tuple(components.batch_shape) != (self.num_pseudo_inputs,):
            raise ConfigError(
                f"the encoder gave batch shape {tuple(components.batch_shape)} for {self.num_pseudo_inputs} "
                f"pseudo-inputs; the VampPrior needs one distribution q(z|u_k) per pseudo-input"
            )
        base = components.base_dist if isinstance(components, dist.Independent) else None
        if isinstance(base, dist.Normal) and components.reinterpreted_batch_ndims == 1:
            return DiagonalNormalMixture.of(components)
        weights = dist.Categorical(logits=self.raw_pseudo_inputs.new_zeros(self.num_pseudo_inputs))  # 1/K each
        return dist.MixtureSameFamily(weights, components)
