r"""The likelihood :math:`p_\theta(x|z)` of the VAE (seed items 5 and 10).

The decoder network maps a latent code ``z`` to one logit per pixel; a
likelihood turns those logits into a distribution over the image with event
shape ``(x_dim,)`` (pixels are conditionally independent given ``z``).

* ``"bernoulli"`` -- :math:`x_d \in \{0, 1\}`, for binarized images. Pyro's
  argument validation stays on: grey-level pixels are *not* in the support and
  are refused with a clear message (binarize them, or pick the next one).
* ``"continuous_bernoulli"`` -- :math:`x_d \in [0, 1]`, the properly normalized
  density for grey-level pixels (Loaiza-Ganem & Cunningham, 2019, "The
  continuous Bernoulli: fixing a pervasive error in variational autoencoders"):
  :math:`p(x|\lambda) = C(\lambda) \lambda^x (1-\lambda)^{1-x}` with
  :math:`C(\lambda) = 2\,\mathrm{artanh}(1-2\lambda)/(1-2\lambda)` and :math:`C(1/2) = 2`
  (``tests/test_continuous_bernoulli.py``). A density can exceed 1, so its bits/dim is not a
  code length and can be negative. Feeding grey pixels to a Bernoulli, as many VAE examples do with validation
  switched off, optimizes a quantity that is not a log-likelihood.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import torch
import pyro.distributions as dist
from torch.nn import functional as F

from pyro_vae.errors import ConfigError, InvalidDataError


class BernoulliPixels(dist.Independent):
    r"""Independent Bernoulli pixels given logits :math:`\ell`: event shape ``(x_dim,)``,

    .. math::

        \log p(x \mid z) = \sum_d x_d \ell_d - \log(1 + e^{\ell_d}),

    the same distribution and value as ``dist.Bernoulli(logits=l).to_event(1)``, with a
    faster :meth:`log_prob`: one summed binary cross-entropy (the sign flipped on the
    per-image sum rather than on every pixel) when ``x`` and the logits have one shape; and,
    when one image is scored under many draws of ``z`` (importance sampling: logits
    ``[K, B, D]``, images ``[B, D]``), :math:`\sum_d x_d \ell_d` as a batched product and
    :math:`\sum_d \log(1 + e^{\ell_d})` by softplus, never materializing ``x`` expanded to
    ``[K, B, D]`` (``bench/loglik.py``). Its samples, mean, support and argument validation
    are Bernoulli's.
    """

    def __init__(self, logits: torch.Tensor, validate_args: Optional[bool] = None) -> None:
        super().__init__(dist.Bernoulli(logits=logits, validate_args=validate_args), 1, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None) -> "BernoulliPixels":
        """The same pixels with batch shape ``batch_shape`` (itself if it already has it)."""
        if tuple(batch_shape) == tuple(self.batch_shape):
            return self  # Pyro's plates expand to the shape the decoder already gives
        logits = self.base_dist.logits
        return BernoulliPixels(logits.expand(*batch_shape, logits.shape[-1]), validate_args=self._validate_args)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        logits = self.base_dist.logits
        if value.shape == logits.shape:
            return -F.binary_cross_entropy_with_logits(logits, value, reduction="none").sum(-1)
        if value.dim() < logits.dim() and logits.shape[logits.dim() - value.dim():] == value.shape:
            return torch.einsum("...d,...d->...", logits, value) - F.softplus(logits).sum(-1)
        logits, value = torch.broadcast_tensors(logits, value)
        return -F.binary_cross_entropy_with_logits(logits, value, reduction="none").sum(-1)


class Likelihood:
    """A pixel-wise likelihood family parameterized by decoder logits."""

    name: str = ""
    support: str = ""

    def __call__(self, logits: torch.Tensor) -> dist.TorchDistribution:
        """The distribution :math:`p(x|z)` with event shape ``(x_dim,)``."""
        raise NotImplementedError

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        r""":math:`\mathbb{E}[x|z]`, the image a decoder "draws" for ``z``."""
        return self(logits).mean

    def check_support(self, x: torch.Tensor) -> None:
        """Raise :class:`~pyro_vae.errors.InvalidDataError` if ``x`` lies outside the support."""
        raise NotImplementedError


class BernoulliLikelihood(Likelihood):
    name = "bernoulli"
    support = "{0, 1}"

    def __call__(self, logits: torch.Tensor) -> dist.TorchDistribution:
        return BernoulliPixels(logits)

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    def check_support(self, x: torch.Tensor) -> None:
        bad = (x != 0) & (x != 1)
        if bool(bad.any()):
            example = float(x[bad].flatten()[0])
            raise InvalidDataError(
                f"the 'bernoulli' likelihood needs binary pixels (0 or 1), but the data "
                f"holds {int(bad.sum())} other values (e.g. {example:.4g}). Binarize the "
                f"data (binarize='dynamic' or 'fixed') or use "
                f"likelihood='continuous_bernoulli' for grey-level pixels in [0, 1].",
                settings=("binarize", "likelihood"),
            )


class ContinuousBernoulliLikelihood(Likelihood):
    name = "continuous_bernoulli"
    support = "[0, 1]"

    def __call__(self, logits: torch.Tensor) -> dist.TorchDistribution:
        return dist.ContinuousBernoulli(logits=logits).to_event(1)

    def check_support(self, x: torch.Tensor) -> None:
        bad = ~((x >= 0) & (x <= 1))  # written so that NaN is bad too
        if bool(bad.any()):
            example = float(x[bad].flatten()[0])
            raise InvalidDataError(
                f"the 'continuous_bernoulli' likelihood needs pixels in [0, 1], but the "
                f"data holds {int(bad.sum())} values outside it (e.g. {example:.4g}). Scale "
                f"the images to [0, 1] first (e.g. divide uint8 pixels by 255) and drop NaN/inf."
            )


LIKELIHOODS: Dict[str, Callable[[], Likelihood]] = {
    BernoulliLikelihood.name: BernoulliLikelihood,
    ContinuousBernoulliLikelihood.name: ContinuousBernoulliLikelihood,
}


def get_likelihood(name: str) -> Likelihood:
    """Look a likelihood up by name; unknown names list the valid ones."""
    try:
        return LIKELIHOODS[name]()
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown likelihood {name!r}; choose one of {sorted(LIKELIHOODS)}"
        ) from None
