r"""The likelihood :math:`p_\phi(x|z)` of the VAE (seed items 5 and 10).

The decoder network maps a latent code ``z`` to one logit per pixel; a
likelihood turns those logits into a distribution over the image with event
shape ``(x_dim,)`` (pixels are conditionally independent given ``z``).

* ``"bernoulli"`` -- :math:`x_d \in \{0, 1\}`, for binarized images. Pyro's
  argument validation stays on: grey-level pixels are *not* in the support and
  are refused with a clear message (binarize them, or pick the next one).
* ``"continuous_bernoulli"`` -- :math:`x_d \in [0, 1]`, the properly normalized
  density for grey-level pixels (Loaiza-Ganem & Cunningham, 2019, "The
  continuous Bernoulli: fixing a pervasive error in variational autoencoders").
  Feeding grey pixels to a Bernoulli, as many VAE examples do with validation
  switched off, optimizes a quantity that is not a log-likelihood.
"""

from __future__ import annotations

from typing import Callable, Dict

import torch
import pyro.distributions as dist

from .errors import ConfigError, InvalidDataError


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
        """Raise :class:`InvalidDataError` if ``x`` lies outside the support."""
        raise NotImplementedError


class BernoulliLikelihood(Likelihood):
    name = "bernoulli"
    support = "{0, 1}"

    def __call__(self, logits: torch.Tensor) -> dist.TorchDistribution:
        return dist.Bernoulli(logits=logits).to_event(1)

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    def check_support(self, x: torch.Tensor) -> None:
        bad = (x != 0) & (x != 1)
        if bool(bad.any()):
            example = float(x[bad].flatten()[0])
            raise InvalidDataError(
                f"the 'bernoulli' likelihood needs binary pixels (0 or 1), but the data "
                f"holds {int(bad.sum())} other values (e.g. {example:.4g}). Binarize the "
                f"data (binarize='dynamic' or 'fixed', CLI --binarize) or use "
                f"likelihood='continuous_bernoulli' for grey-level pixels in [0, 1]."
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
