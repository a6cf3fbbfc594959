r"""The discretized logistic distribution of 8-bit images (Salimans et al., 2017, "PixelCNN++:
Improving the PixelCNN with Discretized Logistic Mixture Likelihood and Other Modifications"),
one logistic per pixel: the likelihood ``"discretized_logistic"`` of
:mod:`pyro_vae.models.likelihoods`.

A pixel takes one of the 256 values :math:`x \in \{0, \frac1{255}, \dots, 1\}`; its probability is the
mass a logistic :math:`(\mu, s)` puts on the value's bin of width :math:`1/255`, the end bins reaching
to :math:`\pm\infty` so that the 256 masses sum to 1. ``log p`` is then the log of a probability and
:math:`-\log p / (D \ln 2)` a code length in bits per pixel, comparable with other models of 8-bit images.
"""

from __future__ import annotations

from typing import Optional

import pyro.distributions as dist
import torch
from torch.distributions import constraints
from torch.nn import functional as F


class DiscretizedLogistic(dist.TorchDistribution):
    r"""Independent 8-bit pixels :math:`x \in \{0, \frac1{255}, \dots, 1\}`, each the mass of a logistic
    :math:`(\mu, s)` over its bin :math:`[x - \frac1{510}, x + \frac1{510}]`, the bins of 0 and 1
    reaching to :math:`-\infty` and :math:`+\infty`:

    .. math::

        P(x) = \sigma\!\left(\tfrac{x + 1/510 - \mu}{s}\right) - \sigma\!\left(\tfrac{x - 1/510 - \mu}{s}\right).

    Batch shape that of ``loc`` without its last dimension, event shape ``(x_dim,)``.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.independent(constraints.unit_interval, 1)
    half_bin = 1 / 510

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, validate_args: Optional[bool] = None) -> None:
        self.loc, self.scale = torch.broadcast_tensors(loc, scale)
        super().__init__(self.loc.shape[:-1], self.loc.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape, _instance=None) -> "DiscretizedLogistic":
        """The same pixels with batch shape ``batch_shape``."""
        shape = (*batch_shape, *self.event_shape)
        return DiscretizedLogistic(self.loc.expand(shape), self.scale.expand(shape), validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """The log-mass of the 8-bit image ``value``, summed over its pixels."""
        upper = (value + self.half_bin - self.loc) / self.scale
        lower = (value - self.half_bin - self.loc) / self.scale
        # The bin's mass without cancellation: sigma(u) - sigma(l) = sigma(u) sigma(-l) (1 - e^(l - u)).
        middle = F.logsigmoid(upper) + F.logsigmoid(-lower) + torch.log(-torch.expm1(lower - upper))
        first = F.logsigmoid(upper)  # x = 0: everything below its upper edge
        last = F.logsigmoid(-lower)  # x = 1: everything above its lower edge
        log_p = torch.where(value < self.half_bin, first, torch.where(value > 1 - self.half_bin, last, middle))
        return log_p.sum(-1)

    @property
    def mean(self) -> torch.Tensor:
        """The exact mean over the 256 values."""
        values = torch.arange(256, dtype=self.loc.dtype, device=self.loc.device) / 255
        edges = torch.cat([values - self.half_bin, values[-1:] + self.half_bin])
        cdf = torch.sigmoid((edges - self.loc.unsqueeze(-1)) / self.scale.unsqueeze(-1))
        cdf = torch.cat([torch.zeros_like(cdf[..., :1]), cdf[..., 1:-1], torch.ones_like(cdf[..., :1])], -1)
        return ((cdf[..., 1:] - cdf[..., :-1]) * values).sum(-1)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        """A logistic draw rounded to its 8-bit bin (the tails into 0 and 1): exactly this distribution."""
        shape = self._extended_shape(sample_shape)
        u = torch.rand(shape, dtype=self.loc.dtype, device=self.loc.device).clamp(1e-6, 1 - 1e-6)
        y = self.loc.expand(shape) + self.scale.expand(shape) * (u.log() - (-u).log1p())
        return (y * 255).round().clamp(0, 255) / 255
