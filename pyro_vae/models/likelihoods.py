r"""The likelihood :math:`p_\theta(x|z)` of the VAE (seed items 5 and 10).

The decoder network maps a latent code ``z`` to :attr:`Likelihood.params_per_feature` outputs
per feature (pixel, or column of a table); a likelihood turns them into a distribution over the
datapoint with event shape ``(x_dim,)`` (features are conditionally independent given ``z``).
Parameters that do not depend on ``z`` (a feature's noise scale, a count's dispersion) are the
likelihood's own, learned with the decoder. Each is chosen by name (:data:`LIKELIHOODS`):

* ``"bernoulli"`` -- :math:`x_d \in \{0, 1\}`, for binarized images. Pyro's
  argument validation stays on: grey-level pixels are *not* in the support and
  are refused with a clear message (binarize them, or pick the next one).
* ``"continuous_bernoulli"`` -- :math:`x_d \in [0, 1]`, the properly normalized
  density for grey-level pixels (Loaiza-Ganem & Cunningham, 2019, "The
  continuous Bernoulli: fixing a pervasive error in variational autoencoders"):
  :math:`p(x|\lambda) = C(\lambda) \lambda^x (1-\lambda)^{1-x}` with
  :math:`C(\lambda) = 2\,\mathrm{artanh}(1-2\lambda)/(1-2\lambda)` and :math:`C(1/2) = 2`
  (``tests/test_continuous_bernoulli.py``). A density can exceed 1, so its "bits/dim" would be no
  code length and could be negative: it is not reported. Feeding grey pixels to a Bernoulli, as many VAE examples do with validation
  switched off, optimizes a quantity that is not a log-likelihood.
* ``"normal"`` -- :math:`x_d \in \mathbb R`, :math:`\mathcal N(\mu_d(z), \sigma_d^2)` with one learned
  scale per feature (standardized tables); ``"normal_heteroscedastic"`` -- the scale too from
  the decoder, per datapoint.
* ``"laplace"`` and ``"student_t"`` -- heavy tails, a learned scale per feature (and, for
  Student's t, learned degrees of freedom per feature, above 1 so that the mean exists).
* ``"poisson"`` and ``"negative_binomial"`` -- counts :math:`x_d \in \{0, 1, 2, \dots\}`; the
  negative binomial's dispersion (its ``total_count``) learned per feature, as in models of
  single-cell counts.
* ``"categorical:K"`` -- discrete features :math:`x_d \in \{0, \dots, K-1\}` (a survey's answers, a
  genotype), :math:`K` logits per feature from the decoder.
* ``"discretized_logistic"`` -- 8-bit pixels :math:`x_d \in \{0, \frac1{255}, \dots, 1\}`: the mass
  of a logistic over each pixel value's bin of width :math:`1/255`, the tails going to the end
  bins (Salimans et al., 2017, "PixelCNN++"), so that bits/dim is a code length of 8-bit images
  comparable with the literature.

On continuous data (:attr:`Likelihood.discrete` False) :math:`\log p(x|z)` is a *density*: it can be
positive, and so can the ELBO; bits/dim is then no code length and is not reported.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from pyro_vae.errors import ConfigError, InvalidDataError
from pyro_vae.models.discretized_logistic import DiscretizedLogistic
from pyro_vae.models.softplus import softplus_sum


def _is_binary(value: torch.Tensor) -> bool:
    """Whether every entry of ``value`` is 0 or 1, read as stored: the dimensions an expanded view
    broadcasts (stride 0, the particles of importance sampling) are read once."""
    stored = value[tuple(slice(0, 1) if stride == 0 else slice(None) for stride in value.stride())]
    return bool(((stored == 0) | (stored == 1)).all())


class BernoulliPixels(dist.Independent):
    r"""Independent Bernoulli pixels given logits :math:`\ell`: event shape ``(x_dim,)``,

    .. math::

        \log p(x \mid z) = \sum_d x_d \ell_d - \log(1 + e^{\ell_d}),

    the same distribution and value as ``dist.Bernoulli(logits=l).to_event(1)``, with a
    faster :meth:`log_prob`: :math:`\sum_d x_d \ell_d` as a batched product and
    :math:`\sum_d \log(1 + e^{\ell_d})` by :func:`~pyro_vae.models.softplus.softplus` (three times
    torch's softplus, and faster than its binary cross-entropy with gradients), or, without
    gradients, by :func:`~pyro_vae.models.softplus.softplus_sum` (twice as fast again). When one image
    is scored under many draws of ``z`` (importance sampling: logits ``[K, B, D]``, images
    ``[B, D]``) the product broadcasts, never materializing ``x`` expanded to ``[K, B, D]``
    (``bench/loglik.py``). Without gradients and with binary pixels (a binarized test set), the
    product is not needed at all: with :math:`s_d = 1 - 2x_d`, each pixel's term is
    :math:`-\log(1 + e^{s_d \ell_d})`, and ``softplus_sum(logits, sign=s)`` is the whole sum. Its
    samples, mean, support and argument validation are Bernoulli's.
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
        if not (logits.requires_grad and torch.is_grad_enabled()) and _is_binary(value):
            sign = (1 - 2 * value).to(logits.dtype)
            return softplus_sum(logits, sign=sign).neg_()  # x l - log(1 + e^l) = -log(1 + e^((1 - 2x) l))
        return torch.einsum("...d,...d->...", logits, value) - softplus_sum(logits)


class Likelihood(nn.Module):
    """A feature-wise likelihood family parameterized by the decoder's outputs (and, for some,
    parameters of its own, learned with them).

    :param x_dim: the number of features, for the parameters kept per feature.
    """

    name: str = ""
    support: str = ""
    #: decoder outputs per feature (a location, or a location and a scale)
    params_per_feature: int = 1
    #: whether ``log p(x|z)`` is a probability (bits/dim a code length) rather than a density
    discrete: bool = True
    #: whether the data are pixel intensities in [0, 1] (images), rather than a table's features
    pixels: bool = False

    def __init__(self, x_dim: Optional[int] = None) -> None:
        super().__init__()
        self.x_dim = x_dim

    def forward(self, out: torch.Tensor) -> dist.TorchDistribution:
        """The distribution :math:`p(x|z)` with event shape ``(x_dim,)``, from the decoder's ``out``."""
        raise NotImplementedError

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        r""":math:`\mathbb{E}[x|z]`, the datapoint a decoder "draws" for ``z``."""
        return self(out).mean

    def check_support(self, x: torch.Tensor) -> None:
        """Raise :class:`~pyro_vae.errors.InvalidDataError` if ``x`` lies outside the support."""
        raise NotImplementedError

    def _per_feature(self, init: float) -> nn.Parameter:
        if self.x_dim is None:
            raise ConfigError(
                f"the {self.name!r} likelihood learns a parameter per feature: build it with "
                f"get_likelihood({self.name!r}, x_dim)",
                settings=("likelihood",),
            )
        return nn.Parameter(torch.full((self.x_dim,), float(init)))

    def _split(self, out: torch.Tensor) -> tuple:
        """A decoder output of ``params_per_feature * x_dim`` as that many ``[..., x_dim]`` tensors."""
        return out.chunk(self.params_per_feature, dim=-1)

    def _refuse(self, bad: torch.Tensor, x: torch.Tensor, needs: str, fix: str) -> None:
        if bool(bad.any()):
            example = float(x[bad].flatten()[0])
            n = int(bad.sum())
            raise InvalidDataError(
                f"the {self.name!r} likelihood needs {needs}, but {n} value{'s' if n > 1 else ''} of "
                f"the data {'are' if n > 1 else 'is'} not (e.g. {example:.4g}); {fix}",
                settings=("likelihood",),
            )


class BernoulliLikelihood(Likelihood):
    name = "bernoulli"
    pixels = True
    support = "{0, 1}"

    def forward(self, logits: torch.Tensor) -> dist.TorchDistribution:
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
    pixels = True
    discrete = False  # a density on [0, 1]
    support = "[0, 1]"

    def forward(self, logits: torch.Tensor) -> dist.TorchDistribution:
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


class RealLikelihood(Likelihood):
    """Real-valued features: every finite value is in the support."""

    support = "real numbers"
    discrete = False

    def check_support(self, x: torch.Tensor) -> None:
        self._refuse(~torch.isfinite(x), x, "finite real values", "drop or impute NaN and infinite features")


def _scale(raw: torch.Tensor) -> torch.Tensor:
    """A positive scale from an unconstrained parameter, bounded away from 0 (a density's
    log can otherwise grow without bound on a feature the decoder fits exactly)."""
    return F.softplus(raw) + 1e-3


class NormalLikelihood(RealLikelihood):
    r""":math:`x_d \sim \mathcal N(\mu_d(z), \sigma_d^2)`, one learned :math:`\sigma_d` per feature."""

    name = "normal"

    def __init__(self, x_dim: Optional[int] = None) -> None:
        super().__init__(x_dim)
        self.raw_scale = self._per_feature(math.log(math.e - 1))  # softplus: 1, standardized data's scale

    def forward(self, loc: torch.Tensor) -> dist.TorchDistribution:
        return dist.Normal(loc, _scale(self.raw_scale)).to_event(1)


class HeteroscedasticNormalLikelihood(RealLikelihood):
    r""":math:`x_d \sim \mathcal N(\mu_d(z), \sigma_d(z)^2)`: the decoder gives both, per datapoint."""

    name = "normal_heteroscedastic"
    params_per_feature = 2

    def forward(self, out: torch.Tensor) -> dist.TorchDistribution:
        loc, raw = self._split(out)
        return dist.Normal(loc, _scale(raw)).to_event(1)


class LaplaceLikelihood(RealLikelihood):
    r""":math:`x_d \sim \mathrm{Laplace}(\mu_d(z), b_d)`, one learned :math:`b_d` per feature: heavier tails."""

    name = "laplace"

    def __init__(self, x_dim: Optional[int] = None) -> None:
        super().__init__(x_dim)
        self.raw_scale = self._per_feature(math.log(math.e - 1))

    def forward(self, loc: torch.Tensor) -> dist.TorchDistribution:
        return dist.Laplace(loc, _scale(self.raw_scale)).to_event(1)


class StudentTLikelihood(RealLikelihood):
    r""":math:`x_d \sim t_{\nu_d}(\mu_d(z), s_d)`, a learned scale and degrees of freedom
    :math:`\nu_d > 1` per feature (starting at :math:`\nu = 5`)."""

    name = "student_t"

    def __init__(self, x_dim: Optional[int] = None) -> None:
        super().__init__(x_dim)
        self.raw_scale = self._per_feature(math.log(math.e - 1))
        self.raw_df = self._per_feature(math.log(math.exp(4.0) - 1))  # 1 + softplus: 5

    def forward(self, loc: torch.Tensor) -> dist.TorchDistribution:
        return dist.StudentT(1 + F.softplus(self.raw_df), loc, _scale(self.raw_scale)).to_event(1)


class CountLikelihood(Likelihood):
    """Counts: every whole number >= 0 is in the support."""

    support = "counts {0, 1, 2, ...}"

    def check_support(self, x: torch.Tensor) -> None:
        self._refuse(
            ~((x >= 0) & (x == x.round())),
            x,
            "counts, whole numbers >= 0",
            "pass the raw counts (not normalized or log-transformed), or choose likelihood='normal'",
        )


class PoissonLikelihood(CountLikelihood):
    r""":math:`x_d \sim \mathrm{Poisson}(\lambda_d(z))`, :math:`\lambda_d = \mathrm{softplus}` of the decoder's output."""

    name = "poisson"

    def forward(self, out: torch.Tensor) -> dist.TorchDistribution:
        return dist.Poisson(F.softplus(out) + 1e-6).to_event(1)


class NegativeBinomialLikelihood(CountLikelihood):
    r""":math:`x_d \sim \mathrm{NB}(r_d, p_d(z))`: over-dispersed counts, variance
    :math:`\mu + \mu^2/r`, the dispersion :math:`r_d` learned per feature, the success logits from
    the decoder."""

    name = "negative_binomial"

    def __init__(self, x_dim: Optional[int] = None) -> None:
        super().__init__(x_dim)
        self.raw_total_count = self._per_feature(math.log(math.e - 1))

    def forward(self, logits: torch.Tensor) -> dist.TorchDistribution:
        return dist.NegativeBinomial(total_count=_scale(self.raw_total_count), logits=logits).to_event(1)


class CategoricalLikelihood(Likelihood):
    r""":math:`x_d \sim \mathrm{Categorical}(\pi_d(z))` over :math:`\{0, \dots, K-1\}`: the decoder gives
    :math:`K` logits per feature. Named ``"categorical:K"``."""

    name = "categorical"
    support = "categories {0, ..., K-1}"

    def __init__(self, x_dim: Optional[int] = None, num_categories: int = 2) -> None:
        super().__init__(x_dim)
        if isinstance(num_categories, bool) or not isinstance(num_categories, int) or num_categories < 2:
            raise ConfigError(
                f"a categorical likelihood needs at least 2 categories, got {num_categories!r}; name it "
                f"e.g. 'categorical:3'",
                settings=("likelihood",),
            )
        self.num_categories = self.params_per_feature = num_categories
        self.name = f"categorical:{num_categories}"

    def forward(self, out: torch.Tensor) -> dist.TorchDistribution:
        logits = torch.stack(self._split(out), -1)  # [..., x_dim, K]
        return dist.Categorical(logits=logits).to_event(1)

    def mean(self, out: torch.Tensor) -> torch.Tensor:
        probs = torch.stack(self._split(out), -1).softmax(-1)
        return (probs * torch.arange(self.num_categories, dtype=probs.dtype, device=probs.device)).sum(-1)

    def check_support(self, x: torch.Tensor) -> None:
        k = self.num_categories
        self._refuse(
            ~((x >= 0) & (x <= k - 1) & (x == x.round())),
            x,
            f"categories, whole numbers 0 to {k - 1}",
            f"code each feature's categories as 0..{k - 1}, or name the likelihood 'categorical:K' with K "
            f"the number of categories",
        )


class DiscretizedLogisticLikelihood(Likelihood):
    r"""8-bit images: :class:`~pyro_vae.models.discretized_logistic.DiscretizedLogistic` with a location and a scale per pixel from the
    decoder (the location through a sigmoid into [0, 1])."""

    name = "discretized_logistic"
    pixels = True
    support = "8-bit grey levels {0, 1/255, ..., 1}"
    params_per_feature = 2

    def forward(self, out: torch.Tensor) -> dist.TorchDistribution:
        loc, raw = self._split(out)
        return DiscretizedLogistic(torch.sigmoid(loc), F.softplus(raw) + 1e-4)

    def check_support(self, x: torch.Tensor) -> None:
        levels = x * 255
        self._refuse(
            ~((x >= 0) & (x <= 1) & ((levels - levels.round()).abs() < 1e-3)),
            x,
            "8-bit grey levels k/255 in [0, 1]",
            "divide uint8 pixels by 255 (not re-scaled, not binarized)",
        )


#: Every likelihood by name: ``get_likelihood(name, x_dim)`` builds one.
LIKELIHOODS: Dict[str, Callable[[Optional[int]], Likelihood]] = {
    cls.name: cls
    for cls in (
        BernoulliLikelihood,
        ContinuousBernoulliLikelihood,
        NormalLikelihood,
        HeteroscedasticNormalLikelihood,
        LaplaceLikelihood,
        StudentTLikelihood,
        PoissonLikelihood,
        NegativeBinomialLikelihood,
        DiscretizedLogisticLikelihood,
    )
}


def get_likelihood(name: str, x_dim: Optional[int] = None) -> Likelihood:
    """Look a likelihood up by name, for data of ``x_dim`` features (``"categorical:K"`` with its
    number of categories); unknown names list the valid ones."""
    if isinstance(name, str) and name.startswith("categorical:"):
        count = name.split(":", 1)[1]
        if not count.isdigit():
            raise ConfigError(
                f"{name!r}: the number of categories must be a whole number, e.g. 'categorical:3'",
                settings=("likelihood",),
            )
        return CategoricalLikelihood(x_dim, int(count))
    try:
        return LIKELIHOODS[name](x_dim)
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown likelihood {name!r}; choose one of {sorted(LIKELIHOODS)}, or 'categorical:K' for features "
            f"of K categories"
        ) from None
