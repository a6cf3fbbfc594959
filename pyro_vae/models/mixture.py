r"""The VampPrior's density: a uniform mixture of diagonal Gaussians as a matrix product.

The prior :math:`p_\lambda(z) = \frac1K \sum_k \mathcal N(z; \mu_k, \mathrm{diag}\,\sigma_k^2)`
(:mod:`pyro_vae.models.priors`) is evaluated at every code of every training step and at
5,000 particles per image of an importance-sampled likelihood. Written as
:class:`~pyro.distributions.MixtureSameFamily` does, it is a ``[N, K, D]`` tensor of squared
distances; :class:`DiagonalNormalMixture` computes the same density from matrix products, in
float64 where the algebra cancels, and, for many codes per datapoint without gradients, in
float32 about each datapoint's centre, where it does not.
"""

from __future__ import annotations

import math
from typing import Optional

import pyro.distributions as dist
import torch


class DiagonalNormalMixture(dist.MixtureSameFamily):
    r"""A uniform mixture of ``K`` diagonal Gaussians :math:`\frac1K\sum_k \mathcal N(z; \mu_k,
    \mathrm{diag}\,\sigma_k^2)` whose density comes from matrix products.

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
    evaluation under :func:`~pyro_vae.models.priors.cached_priors`). The terms can be large and
    nearly cancel (a sharp component, a code far from it), so they are formed in float64, where
    the cancellation costs nothing a float32 density could see. The log-sum-exp over components
    floors each term at :math:`e^{-700}` of the largest: the exponentials of the far
    components underflow to subnormal numbers otherwise, which x86 CPUs compute many times
    slower, and a term of :math:`10^{-304}` beside one of 1 is below float64's resolution.
    Without gradients (evaluation) of float32 codes, the terms minus the largest, in
    :math:`(-\infty, 0]`, are exponentiated and summed in float32, floored at :math:`e^{-80}` (a
    normal float32): the cancellation is behind them, and the sum, at least 1, keeps float32's
    relative precision.
    The points go through in blocks of at most :attr:`block_elements` ``[block, K]``
    intermediates (20 MB in float64, within a CPU's last-level cache; blocks of a fixed number of
    rows run slower).

    **Many codes per datapoint, without gradients** (importance sampling: ``value`` of shape
    ``[S, ..., B, D]``, with at least :attr:`centred_min_codes` codes per datapoint of the
    ``B``), the product runs in float32 about each datapoint's centre :math:`c`, the mean of its
    codes. With :math:`e = z - c`,

    .. math::

        \log \mathcal N(z; \mu_k, \sigma_k^2) = \log \mathcal N(c; \mu_k, \sigma_k^2)
          - \tfrac12 \sum_d e_d^2\,\sigma_{kd}^{-2} + \sum_d e_d\,(\mu_{kd} - c_d)\,\sigma_{kd}^{-2} :

    the first term is the float64 product above at one point per datapoint, shifted by its
    largest over the components; the second is one float32 product of all codes' squared offsets
    with the components' precisions, and the third a ``[S, D] x [D, K]`` float32 product per
    datapoint (the shifted first term riding along as a row against a constant feature). Their
    size is set by the spread of the codes about their centre in units of the sharpest component,
    :math:`s(z) = \sum_d e_d^2 \max_k \sigma_{kd}^{-2}`, and by the distance of the components
    that matter from the code, not by :math:`z^2 / \sigma^2` as in the expanded square: the codes
    of one datapoint's posterior lie within a few of its widths of each other.
    Where a code's spread exceeds :attr:`centred_max_spread` the float64 product is used instead.
    Sampling and everything else are :class:`~pyro.distributions.MixtureSameFamily`'s.
    """

    #: elements of a ``[block, K]`` block of the density (a ``[5000, 500]`` block is 20 MB in float64)
    block_elements = 2_500_000
    #: fewest codes per datapoint for the centred float32 product: below it, each datapoint's
    #: ``[D, K]`` slopes cost more to build than the float32 product saves
    centred_min_codes = 64
    #: largest spread :math:`s(z)` of a code about its datapoint's centre for the float32 product
    #: (float32 rounding of the terms is then at most about :math:`2^{10} \times 6 \times 10^{-8}`)
    centred_max_spread = 2.0**10

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
        r""":math:`\log \frac1K \sum_k \mathcal N(z; \mu_k, \mathrm{diag}\,\sigma_k^2)` of ``value`` ``[..., D]``, from the products above."""
        if self._validate_args:
            self._validate_sample(value)
        d = self.loc.shape[-1]
        log_density = None
        if self._centred_applies(value):
            log_density = self._centred_log_prob(value.reshape(-1, *value.shape[-2:]))
        if log_density is None:
            log_density = self._expanded_log_prob(value.reshape(-1, d)).to(value.dtype)
        log_density = log_density.reshape(value.shape[:-1])
        return log_density.expand(torch.broadcast_shapes(log_density.shape, self.batch_shape))

    def _centred_applies(self, value: torch.Tensor) -> bool:
        return (
            not torch.is_grad_enabled()
            and value.dtype == self.loc.dtype == torch.float32
            and value.dim() >= 3
            and value.shape[:-2].numel() >= self.centred_min_codes
        )

    def _expanded_log_prob(self, points: torch.Tensor) -> torch.Tensor:
        """``[N]`` float64 log-densities of ``[N, D]`` points from the float64 product of the expanded square."""
        k = self.loc.shape[0]
        weights = self._linear_weights()
        tail, floor = (torch.float64, -700.0) if points.dtype == torch.float64 else (torch.float32, -80.0)
        blocks = []
        for block in points.double().split(max(1, self.block_elements // k)):
            features = torch.cat([block.pow(2), block, block.new_ones(block.shape[0], 1)], -1)
            log_components = features @ weights  # [block, K]
            top = log_components.detach().amax(-1, keepdim=True)
            # exp of a term below e^-700 of the largest underflows to a subnormal, which the CPU
            # computes dozens of times slower; at e^-700 (~1e-304) it adds nothing float64 can see
            if log_components.requires_grad:
                terms = (log_components - top).clamp(min=-700.0).exp()
                blocks.append(top.squeeze(-1) + terms.sum(-1).log())
            else:  # evaluation: in place, no graph to keep; past the cancellation, in the points'
                # precision (a float32 floor of e^-80 is still normal, and beside the top's 1 adds nothing)
                terms = log_components.sub_(top).to(tail).clamp_(min=floor).exp_()
                blocks.append(top.squeeze(-1) + terms.sum(-1).log().double())
        return torch.cat(blocks) - math.log(k)

    def _centred_log_prob(self, codes: torch.Tensor) -> Optional[torch.Tensor]:
        """``[S, B]`` log-densities of float32 ``codes`` ``[S, B, D]`` (``S`` per datapoint) from the
        float32 product about each datapoint's centre, or ``None`` where a code is too far from it."""
        s, b, d = codes.shape
        k = self.loc.shape[0]
        precision = self.scale.pow(-2)  # [K, D]
        centre = codes.mean(0)  # [B, D]
        offsets = (codes - centre).transpose(0, 1).contiguous()  # [B, S, D]
        squares = offsets.pow(2)
        if float((squares @ precision.amax(0)).max()) > self.centred_max_spread:
            return None
        c = centre.double()
        at_centre = torch.cat([c.pow(2), c, c.new_ones(b, 1)], -1) @ self._linear_weights()  # [B, K] float64
        shift = at_centre.amax(-1, keepdim=True)  # [B, 1]: the float32 terms stay near the scale of s(z)
        # each datapoint's [D + 1, K] weights: the slopes p_k (mu_k - c), then the log-densities at
        # the centre as the row that multiplies a constant feature of 1
        slopes = torch.cat(
            [(self.loc - centre[:, None, :]).mul_(precision), (at_centre - shift).float()[..., None]], -1
        )
        slopes = slopes.transpose(1, 2)  # [B, D + 1, K]
        offsets = torch.cat([offsets, offsets.new_ones(b, s, 1)], -1)  # [B, S, D + 1]
        curvature = precision.T.mul(-0.5)  # [D, K]
        rows = max(1, self.block_elements // k)  # codes per block
        per_block = max(1, rows // s)  # datapoints per block; if one has more codes, they go in blocks of rows
        out = codes.new_empty(b, s)
        for lo in range(0, b, per_block):
            hi = min(b, lo + per_block)
            for first in range(0, s, rows):
                last = min(s, first + rows)
                terms = torch.bmm(offsets[lo:hi, first:last], slopes[lo:hi])
                terms.view(-1, k).addmm_(squares[lo:hi, first:last].reshape(-1, d), curvature)  # [blocks, codes, K]
                top = terms.amax(-1, keepdim=True)
                # the floor of e^-80 keeps exp out of float32's subnormals, as in the expanded product
                out[lo:hi, first:last] = terms.sub_(top).clamp_(min=-80.0).exp_().sum(-1).log_().add_(top.squeeze(-1))
        return (out.double() + shift - math.log(k)).float().T
