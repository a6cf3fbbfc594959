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
densities; for a diagonal-Gaussian encoder they come from two matrix products
(:class:`DiagonalNormalMixture`) instead of a ``[B, K, z_dim]`` tensor of squared distances.

Reference: Tomczak & Welling (2018), "VAE with a VampPrior", AISTATS.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional

import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution
from torch import nn

from pyro_vae.errors import ConfigError, check_positive

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


class DiagonalNormalMixture(dist.MixtureSameFamily):
    r"""A uniform mixture of ``K`` diagonal Gaussians :math:`\frac1K\sum_k \mathcal N(z; \mu_k,
    \mathrm{diag}\,\sigma_k^2)` whose density comes from one matrix product.

    :class:`~pyro.distributions.MixtureSameFamily` evaluates every component at every point,
    a ``[N, K, D]`` tensor of squared distances: at ``K = 500`` and a batch of 512 that is
    13 million elements through half a dozen element-wise passes and their backward, which
    made a VampPrior step many times slower than the standard prior's. Expanding the
    square, each component's log-density is linear in the features :math:`(z^2, z, 1)`,

    .. math::

        \log \mathcal N(z; \mu_k, \sigma_k^2)
        = -\tfrac12 \sum_d z_d^2\,\sigma_{kd}^{-2} + \sum_d z_d\,\mu_{kd}\sigma_{kd}^{-2}
          - \tfrac12 \sum_d \mu_{kd}^2\sigma_{kd}^{-2} - \sum_d \log \sigma_{kd} - \tfrac D2 \log 2\pi,

    so all ``N x K`` of them are one ``[N, 2D+1] x [2D+1, K]`` product with a ``[2D+1, K]``
    matrix that depends on the components only (built once per mixture, and once per
    evaluation under :func:`cached_priors`). The terms can be large and nearly cancel (a
    sharp component, a code far from it), so they are formed in float64, where the
    cancellation costs nothing a float32 density could see. The log-sum-exp over components
    floors each term at :math:`e^{-700}` of the largest: the exponentials of the far
    components underflow to subnormal numbers otherwise, which x86 CPUs compute many times
    slower, and a term of :math:`10^{-304}` beside one of 1 is below float64's resolution.
    Without gradients (evaluation) of float32 codes, the terms minus the largest, in
    :math:`(-\infty, 0]`, are exponentiated and summed in float32, floored at :math:`e^{-80}` (a
    normal float32): the cancellation is behind them, and the sum, at least 1, keeps float32's
    relative precision.
    The points go through in blocks of at most :attr:`block_elements` ``[block, K]`` float64
    intermediates (20 MB, within a CPU's last-level cache; blocks of a fixed number of rows run
    slower). Sampling and everything else are :class:`~pyro.distributions.MixtureSameFamily`'s.
    """

    #: elements of a ``[block, K]`` float64 block of the density (a ``[5000, 500]`` block is 20 MB)
    block_elements = 2_500_000

    @classmethod
    def of(cls, components: dist.Independent) -> "DiagonalNormalMixture":
        """The uniform mixture of ``components``, an ``Independent(Normal)`` of batch shape ``[K]``."""
        loc = components.base_dist.loc
        new = cls(dist.Categorical(logits=loc.new_zeros(loc.shape[0])), components)
        new.loc, new.scale = components.base_dist.loc, components.base_dist.scale  # [K, D]
        new._built = [None]  # one cell shared by every expanded copy
        return new

    def expand(self, batch_shape, _instance=None):
        """The same mixture with batch shape ``batch_shape``, keeping the ``[K, D]`` parameters."""
        new = super().expand(batch_shape, _instance)
        new.loc, new.scale = self.loc, self.scale  # the [K, D] parameters, not their expanded views
        new._built = self._built  # shared: the weights depend on the components only
        return new

    def _linear_weights(self) -> torch.Tensor:
        """``W`` ``[2D+1, K]`` with ``(z^2, z, 1) @ W`` the components' log-densities; float64, built
        at the first :meth:`log_prob` without gradients and kept (every expanded copy shares it)."""
        if self._built[0] is None or (torch.is_grad_enabled() and self.loc.requires_grad):
            loc, scale = self.loc.double(), self.scale.double()
            precision = scale.pow(-2)  # [K, D]
            log_norm = scale.log().sum(-1) + 0.5 * loc.shape[-1] * math.log(2 * math.pi)  # [K]
            constant = -0.5 * (loc.pow(2) * precision).sum(-1) - log_norm
            weights = torch.cat([-0.5 * precision, loc * precision, constant[:, None]], -1).T.contiguous()
            if not torch.is_grad_enabled():
                self._built[0] = weights  # no graph to keep fresh: reuse
            return weights
        return self._built[0]

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        r""":math:`\log \frac1K \sum_k \mathcal N(z; \mu_k, \mathrm{diag}\,\sigma_k^2)` of ``value`` ``[..., D]``, from the product above."""
        if self._validate_args:
            self._validate_sample(value)
        k, d = self.loc.shape
        weights = self._linear_weights()
        points = value.reshape(-1, d).double()
        blocks = []
        for block in points.split(max(1, self.block_elements // k)):
            features = torch.cat([block.pow(2), block, block.new_ones(block.shape[0], 1)], -1)
            log_components = features @ weights  # [block, K]
            top = log_components.detach().amax(-1, keepdim=True)
            # exp of a term below e^-700 of the largest underflows to a subnormal, which the CPU
            # computes dozens of times slower; at e^-700 (~1e-304) it adds nothing float64 can see
            if log_components.requires_grad:
                terms = (log_components - top).clamp(min=-700.0).exp()
                blocks.append(top.squeeze(-1) + terms.sum(-1).log())
            else:  # evaluation: in place, no graph to keep; past the cancellation, in the value's
                # precision (a float32 floor of e^-80 is still normal, and beside the top's 1 adds nothing)
                tail, floor = (torch.float64, -700.0) if value.dtype == torch.float64 else (torch.float32, -80.0)
                terms = log_components.sub_(top).to(tail).clamp_(min=floor).exp_()
                blocks.append(top.squeeze(-1) + terms.sum(-1).log().double())
        log_density = (torch.cat(blocks) - math.log(k)).to(value.dtype).reshape(value.shape[:-1])
        return log_density.expand(torch.broadcast_shapes(log_density.shape, self.batch_shape))
