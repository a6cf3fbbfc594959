r"""Information content, entropy, cross-entropy and KL divergence (seed items 2-4).

For a distribution :math:`p` the *information content* of an outcome is (seed item 2)

.. math::

    h(x) = -\log_b p(x),

so likely outcomes carry little information. The log base :math:`b` fixes the
unit: :math:`b = e` gives nats, :math:`b = 2` bits, :math:`b = 10` bans (hartleys);
:math:`\log_b y = \ln y / \ln b`. The *entropy* is the average information
(seed item 3)

.. math::

    H(p) = \mathbb E_{p}[h(X)] = -\sum_x p(x) \log p(x)
    \qquad \big(-\textstyle\int p \log p\,dx \text{ for a density}\big),

e.g. :math:`X` uniform over 8 values has :math:`H_2(X) = \log_2 8 = 3` bits. The
*cross-entropy* :math:`H(q, p) = -\mathbb E_{q}[\log p(X)]` is the average code
length when a code built for :math:`p` is used for samples of :math:`q`, and the
*KL divergence* is the extra information paid for that mismatch (seed item 4)

.. math::

    \mathrm{KL}(q \,\|\, p) = H(q, p) - H(q)
    = -\int q \ln p \,dx - \Big(-\int q \ln q \,dx\Big)
    = \mathbb E_{q}\big[\log q(X) - \log p(X)\big] \;\ge\; 0 .

Every function takes ``torch.distributions`` / ``pyro.distributions`` objects or a
*probability vector* (a 1-D tensor of probabilities summing to 1, read as a
Categorical over its indices), and returns an :class:`Estimate` computed one of
three ways, recorded in ``Estimate.method``:

* ``"analytic"``: a closed form known to torch/Pyro (``Distribution.entropy``,
  a registered ``kl_divergence``);
* ``"exact-sum"``: the defining sum over a finite support (probability vectors,
  distributions with ``enumerate_support``), with :math:`0 \log 0 = 0`;
* ``"monte-carlo"``: the sample mean of the integrand over :math:`X \sim q`
  (or :math:`p`) with its standard error ``std / sqrt(num_samples)``.

For densities these are *differential* entropies (they can be negative); KL is
invariant to the choice of coordinates and is what the ELBO uses (seed item 8).

Reference: Cover & Thomas (2006), *Elements of Information Theory*, ch. 2 and 8.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, NamedTuple, Optional, Sequence, Tuple, Union

import pyro.distributions  # noqa: F401  (registers Pyro's extra KL closed forms with torch)
import torch
from torch.distributions import Categorical, Distribution
from torch.distributions import kl_divergence as _registered_kl

if TYPE_CHECKING:  # pragma: no cover
    from typing_extensions import TypeIs

ProbVector = Union[torch.Tensor, Sequence[float]]
DistLike = Union[Distribution, ProbVector]

#: log base of each unit of information (seed item 2).
UNITS = {"nats": math.e, "bits": 2.0, "bans": 10.0, "hartleys": 10.0}

_METHODS = ("analytic", "mc")


class Estimate(NamedTuple):
    """An information quantity with its standard error and how it was computed."""

    value: torch.Tensor  #: the quantity, in the requested unit, of the distribution's batch shape
    stderr: torch.Tensor  #: Monte Carlo standard error (zero for exact methods), same unit
    method: str  #: "analytic", "exact-sum" or "monte-carlo"


def from_nats(value: torch.Tensor, unit: str = "nats") -> torch.Tensor:
    r"""Convert an amount of information from nats to ``unit``: :math:`\log_b y = \ln y / \ln b`."""
    if unit not in UNITS:
        raise ValueError(f"unknown unit {unit!r}; valid units are {', '.join(map(repr, UNITS))}")
    return value / math.log(UNITS[unit])


def _check_method(method: str) -> None:
    if method not in _METHODS:
        raise ValueError(f"unknown method {method!r}; use 'analytic' or 'mc' (Monte Carlo)")


def _check_num_samples(num_samples: int) -> None:
    # At least two samples are needed for a standard error.
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 2:
        raise ValueError(f"num_samples must be an integer >= 2, got {num_samples!r}")


def check_probability_vector(probs: ProbVector) -> torch.Tensor:
    """Return ``probs`` as a floating 1-D tensor, or raise ``ValueError`` saying what is wrong.

    Entries must be finite and non-negative and sum to 1 within the square root of
    the dtype's machine epsilon (about 1.5e-8 in float64, 3.5e-4 in float32).
    """
    probs = torch.as_tensor(probs)
    if not probs.is_floating_point():
        probs = probs.to(torch.get_default_dtype())
    if probs.dim() != 1 or probs.numel() == 0:
        raise ValueError(
            f"a probability vector must be a non-empty 1-D tensor, got shape {tuple(probs.shape)}; "
            "for a batch of them use torch.distributions.Categorical(probs=...)"
        )
    if not torch.isfinite(probs).all() or (probs < 0).any():
        raise ValueError(f"a probability vector must have finite, non-negative entries, got {probs}")
    total = probs.sum()
    tol = torch.finfo(probs.dtype).eps ** 0.5
    if abs(total.item() - 1.0) > tol:
        raise ValueError(f"a probability vector must sum to 1, but this one sums to {total.item():.10g}")
    return probs


def _is_distribution(d: object) -> TypeIs[Distribution]:
    return isinstance(d, Distribution)


def _as_probs_or_dist(d: DistLike) -> Union[torch.Tensor, Distribution]:
    if _is_distribution(d):
        return d
    if isinstance(d, (torch.Tensor, list, tuple)):
        return check_probability_vector(d)
    raise TypeError(f"expected a torch/Pyro Distribution or a probability vector, got {type(d).__name__}")


def _as_dist(d: DistLike) -> Distribution:
    d = _as_probs_or_dist(d)
    return d if _is_distribution(d) else Categorical(probs=d)


def _finite_support(d: Distribution) -> bool:
    return bool(getattr(d, "has_enumerate_support", False))


def _exact_expectation(
    q: Distribution, integrand: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    r""":math:`\sum_x q(x)\, g(x, \log q(x))` over q's finite support, zero-mass terms dropped."""
    values = q.enumerate_support(expand=True)  # [n, *batch, *event]
    log_q = q.log_prob(values)  # [n, *batch]
    terms = log_q.exp() * integrand(values, log_q)
    # 0 * log 0 := 0 (the limit), and a zero-mass value never contributes.
    terms = torch.where(log_q == -math.inf, torch.zeros_like(terms), terms)
    return terms.sum(0)


def _mc_mean(samples: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Sample mean over dim 0 and its standard error."""
    n = samples.shape[0]
    return samples.mean(0), samples.std(0, unbiased=True) / math.sqrt(n)


def _no_closed_form(what: str, q: Distribution, p: Optional[Distribution] = None) -> NotImplementedError:
    names = type(q).__name__ if p is None else f"{type(q).__name__} and {type(p).__name__}"
    return NotImplementedError(
        f"no closed form of the {what} is known for {names}; use method='mc' for a Monte Carlo estimate"
    )


def information_content(d: DistLike, x: torch.Tensor, unit: str = "nats") -> torch.Tensor:
    r"""The information content :math:`h(x) = -\log p(x)` of ``x`` under ``d`` (seed item 2).

    For a probability vector ``x`` is an index (or tensor of indices). An impossible
    outcome has infinite information.
    """
    d = _as_probs_or_dist(d)
    if _is_distribution(d):
        return from_nats(-d.log_prob(x), unit)
    index = torch.as_tensor(x)
    if index.is_floating_point() or index.dtype == torch.bool:
        raise ValueError(f"outcomes of a probability vector are integer indices, got dtype {index.dtype}")
    if (index < 0).any() or (index >= d.numel()).any():
        raise ValueError(f"outcome index out of range for a probability vector of length {d.numel()}: {x}")
    return from_nats(-torch.log(d[index]), unit)


def entropy(d: DistLike, unit: str = "nats", num_samples: int = 10000) -> Estimate:
    r"""The entropy :math:`H(p) = \mathbb E_p[-\log p(X)]` (seed item 3).

    Uses ``d.entropy()`` when implemented, else the exact sum over a finite
    support, else the Monte Carlo mean of :math:`-\log p(X)` over ``num_samples``
    draws :math:`X \sim p`.
    """
    d = _as_probs_or_dist(d)
    if not _is_distribution(d):
        value = -torch.special.xlogy(d, d).sum()
        return Estimate(from_nats(value, unit), torch.zeros_like(value), "exact-sum")
    try:
        value = d.entropy()
        return Estimate(from_nats(value, unit), torch.zeros_like(value), "analytic")
    except NotImplementedError:
        pass  # no closed form: enumerate or sample
    if _finite_support(d):
        value = _exact_expectation(d, lambda _, log_q: -log_q)
        return Estimate(from_nats(value, unit), torch.zeros_like(value), "exact-sum")
    _check_num_samples(num_samples)
    value, stderr = _mc_mean(-d.log_prob(d.sample((num_samples,))))
    return Estimate(from_nats(value, unit), from_nats(stderr, unit), "monte-carlo")


def cross_entropy(
    q: DistLike, p: DistLike, unit: str = "nats", method: str = "analytic", num_samples: int = 10000
) -> Estimate:
    r"""The cross-entropy :math:`H(q, p) = -\mathbb E_{q}[\log p(X)]` (seed item 4).

    ``method="analytic"``: :math:`H(q) + \mathrm{KL}(q\|p)` when both have closed
    forms, else the exact sum :math:`-\sum_x q(x) \log p(x)` over q's finite
    support. ``method="mc"``: the mean of :math:`-\log p(X)`, :math:`X \sim q`.
    """
    _check_method(method)
    if method == "mc":
        _check_num_samples(num_samples)
        q, p = _as_dist(q), _as_dist(p)
        value, stderr = _mc_mean(-p.log_prob(q.sample((num_samples,))))
        return Estimate(from_nats(value, unit), from_nats(stderr, unit), "monte-carlo")
    q, p = _as_probs_or_dist(q), _as_probs_or_dist(p)
    if not _is_distribution(q) and not _is_distribution(p):
        _check_same_length(q, p)
        value = -torch.special.xlogy(q, p).sum()  # q > 0 where p = 0 gives +inf, as it should
        return Estimate(from_nats(value, unit), torch.zeros_like(value), "exact-sum")
    q, p = _as_dist(q), _as_dist(p)
    try:
        value = q.entropy() + _registered_kl(q, p)
        return Estimate(from_nats(value, unit), torch.zeros_like(value), "analytic")
    except NotImplementedError:
        pass
    if _finite_support(q):
        value = _exact_expectation(q, lambda x, _: -_log_prob_on(p, x))
        return Estimate(from_nats(value, unit), torch.zeros_like(value), "exact-sum")
    raise _no_closed_form("cross-entropy", q, p)


def kl_divergence(
    q: DistLike, p: DistLike, unit: str = "nats", method: str = "analytic", num_samples: int = 10000
) -> Estimate:
    r"""KL divergence :math:`\mathrm{KL}(q\|p) = H(q, p) - H(q) = \mathbb E_q[\log q - \log p]` (seed item 4).

    ``method="analytic"``: the closed form registered with
    ``torch.distributions.kl_divergence`` (Pyro adds its own on import), else the
    exact sum :math:`\sum_x q(x)(\log q(x) - \log p(x))` over q's finite support.
    ``method="mc"``: the mean of :math:`\log q(X) - \log p(X)`, :math:`X \sim q`;
    unlike the exact value, a single sample can be negative.
    """
    _check_method(method)
    if method == "mc":
        _check_num_samples(num_samples)
        q, p = _as_dist(q), _as_dist(p)
        x = q.sample((num_samples,))
        value, stderr = _mc_mean(q.log_prob(x) - p.log_prob(x))
        return Estimate(from_nats(value, unit), from_nats(stderr, unit), "monte-carlo")
    q, p = _as_probs_or_dist(q), _as_probs_or_dist(p)
    if not _is_distribution(q) and not _is_distribution(p):
        _check_same_length(q, p)
        value = (torch.special.xlogy(q, q) - torch.special.xlogy(q, p)).sum()
        return Estimate(from_nats(value, unit), torch.zeros_like(value), "exact-sum")
    q, p = _as_dist(q), _as_dist(p)
    try:
        value = _registered_kl(q, p)
        return Estimate(from_nats(value, unit), torch.zeros_like(value), "analytic")
    except NotImplementedError:
        pass
    if _finite_support(q):
        value = _exact_expectation(q, lambda x, log_q: log_q - _log_prob_on(p, x))
        return Estimate(from_nats(value, unit), torch.zeros_like(value), "exact-sum")
    raise _no_closed_form("KL divergence", q, p)


def _check_same_length(q: torch.Tensor, p: torch.Tensor) -> None:
    if q.numel() != p.numel():
        raise ValueError(f"probability vectors over different outcome sets: lengths {q.numel()} and {p.numel()}")


def _log_prob_on(p: Distribution, x: torch.Tensor) -> torch.Tensor:
    try:
        return p.log_prob(x)
    except ValueError as e:  # argument validation: q's support is not inside p's
        raise ValueError(f"p ({type(p).__name__}) cannot evaluate log p(x) on the support of q: {e}") from e
