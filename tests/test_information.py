"""Seed items 2-4: information content, entropy, cross-entropy and KL, against closed forms."""

import math

import pyro.distributions as dist
import pytest
import torch
from torch.distributions import transforms

from pyro_vae.inference.information import (
    UNITS,
    Estimate,
    check_probability_vector,
    cross_entropy,
    entropy,
    from_nats,
    information_content,
    kl_divergence,
)

F64 = torch.float64


def _t(values):
    return torch.tensor(values, dtype=F64)


class GammaWithoutEntropy(dist.Gamma):
    """A Gamma that hides its closed-form entropy, to exercise the Monte Carlo path."""

    def entropy(self):
        raise NotImplementedError


class CategoricalWithoutEntropy(dist.Categorical):
    """A Categorical that hides its closed-form entropy, to exercise the exact-sum path."""

    def entropy(self):
        raise NotImplementedError


def log_normal(loc, scale):
    # exp(Normal) built by hand: torch has no entropy for a generic TransformedDistribution.
    return torch.distributions.TransformedDistribution(
        torch.distributions.Normal(loc, scale), [transforms.ExpTransform()]
    )


def _random_probs(n):
    return torch.distributions.Dirichlet(torch.ones(n, dtype=F64)).sample()


# ---- seed item 3: entropy ------------------------------------------------------------------


def test_uniform_over_8_values_has_3_bits():
    probs = torch.full((8,), 1 / 8, dtype=F64)
    as_vector = entropy(probs, unit="bits")
    as_categorical = entropy(dist.Categorical(probs=probs), unit="bits")
    assert as_vector.method == "exact-sum"
    assert as_categorical.method == "analytic"
    for est in (as_vector, as_categorical):
        assert isinstance(est, Estimate)
        assert abs(est.value.item() - 3.0) < 1e-12
        assert est.stderr.item() == 0.0
    assert abs(entropy(probs).value.item() - math.log(8)) < 1e-12  # nats
    assert abs(entropy(probs, unit="bans").value.item() - math.log10(8)) < 1e-12
    assert entropy(probs, unit="hartleys").value.item() == entropy(probs, unit="bans").value.item()


def test_entropy_of_a_point_mass_is_zero_and_zero_probabilities_are_ignored():
    assert entropy(_t([0.0, 1.0, 0.0])).value.item() == 0.0
    # 0 log 0 = 0: padding with impossible outcomes leaves H unchanged.
    assert abs(entropy(_t([0.5, 0.0, 0.5]), unit="bits").value.item() - 1.0) < 1e-12


def test_entropy_of_normal_is_half_log_2_pi_e_sigma_squared():
    sigma = _t([0.1, 1.0, 3.0])
    est = entropy(dist.Normal(_t([0.0, -2.0, 5.0]), sigma))
    expected = 0.5 * torch.log(2 * math.pi * math.e * sigma**2)
    assert est.method == "analytic"
    assert torch.allclose(est.value, expected, atol=1e-12, rtol=0)
    in_bits = entropy(dist.Normal(0.0, sigma), unit="bits").value
    assert torch.allclose(in_bits, expected / math.log(2), atol=1e-12, rtol=0)


def test_exact_sum_entropy_when_no_closed_form():
    torch.manual_seed(0)
    probs = _random_probs(6)
    est = entropy(CategoricalWithoutEntropy(probs=probs))
    assert est.method == "exact-sum"
    assert abs(est.value.item() - dist.Categorical(probs=probs).entropy().item()) < 1e-12
    assert abs(est.value.item() - entropy(probs).value.item()) < 1e-12


def test_monte_carlo_entropy_of_transformed_distribution():
    torch.manual_seed(1)
    loc, scale = _t([0.3, -1.0]), _t([0.5, 2.0])
    est = entropy(log_normal(loc, scale), num_samples=20000)
    # H(exp(Y)) = H(Y) + E[Y] for Y ~ N(loc, scale^2): the log-normal's entropy.
    expected = loc + 0.5 * torch.log(2 * math.pi * math.e * scale**2)
    assert est.method == "monte-carlo"
    assert (est.stderr > 0).all()
    assert ((est.value - expected).abs() < 4 * est.stderr).all(), (est, expected)


def test_monte_carlo_entropy_of_gamma_without_entropy():
    torch.manual_seed(2)
    conc, rate = _t([0.7, 3.0]), _t([1.5, 0.4])
    est = entropy(GammaWithoutEntropy(conc, rate), unit="bits", num_samples=20000)
    expected = dist.Gamma(conc, rate).entropy() / math.log(2)
    assert est.method == "monte-carlo"
    assert ((est.value - expected).abs() < 4 * est.stderr).all(), (est, expected)


# ---- seed item 2: information content ---------------------------------------------------------


def test_information_content_units_and_uniform_outcomes():
    probs = torch.full((8,), 1 / 8, dtype=F64)
    h_uniform = information_content(probs, torch.arange(8), "bits")
    assert torch.allclose(h_uniform, torch.full((8,), 3.0, dtype=F64), atol=1e-12, rtol=0)
    normal = dist.Normal(_t(0.5), _t(1.7))
    x = _t([-3.0, 0.0, 0.5, 4.0])
    nats = information_content(normal, x)
    assert torch.allclose(nats, -normal.log_prob(x), atol=0, rtol=0)
    bits, bans = information_content(normal, x, "bits"), information_content(normal, x, "bans")
    assert torch.allclose(bits, nats / math.log(2), atol=1e-14, rtol=0)
    assert torch.allclose(bans, nats / math.log(10), atol=1e-14, rtol=0)
    # Likely outcomes carry little information.
    skewed = _t([0.7, 0.2, 0.1])
    h = information_content(skewed, torch.arange(3), "bits")
    assert h[0] < h[1] < h[2]
    assert torch.allclose(h, -torch.log2(skewed))
    assert information_content(_t([1.0, 0.0]), 1).item() == math.inf


def test_entropy_is_average_information_content():
    torch.manual_seed(3)
    probs = _random_probs(5)
    average = (probs * information_content(probs, torch.arange(5), "bits")).sum()
    assert abs(average.item() - entropy(probs, unit="bits").value.item()) < 1e-12


# ---- seed item 4: cross-entropy and KL --------------------------------------------------------


def test_kl_is_nonnegative_and_zero_for_identical_distributions():
    torch.manual_seed(4)
    for _ in range(20):
        q, p = _random_probs(7), _random_probs(7)
        assert kl_divergence(q, p).value.item() >= 0
        assert abs(kl_divergence(q, q.clone()).value.item()) < 1e-15
    loc, scale = torch.randn(10, dtype=F64), torch.rand(10, dtype=F64) + 0.1
    normals_q, normals_p = dist.Normal(loc, scale), dist.Normal(loc.flip(0), scale.flip(0))
    assert (kl_divergence(normals_q, normals_p).value >= 0).all()
    assert (kl_divergence(normals_q, dist.Normal(loc, scale)).value.abs() < 1e-15).all()
    tril = torch.randn(3, 3, dtype=F64).tril()
    tril.diagonal().abs_().add_(0.2)
    mvn = dist.MultivariateNormal(torch.randn(3, dtype=F64), scale_tril=tril)
    same = dist.MultivariateNormal(mvn.loc, scale_tril=tril)
    other = dist.MultivariateNormal(-mvn.loc, scale_tril=tril.T.tril())
    assert abs(kl_divergence(mvn, same).value.item()) < 1e-12
    assert kl_divergence(mvn, other).value.item() > 0


def test_kl_in_bits_is_kl_in_nats_over_ln2():
    q, p = _t([0.5, 0.25, 0.25]), _t([0.25, 0.5, 0.25])
    # KL = 0.5 log2(2) + 0.25 log2(1/2) = 0.25 bits exactly.
    assert abs(kl_divergence(q, p, unit="bits").value.item() - 0.25) < 1e-15
    assert abs(kl_divergence(q, p).value.item() - 0.25 * math.log(2)) < 1e-15


@pytest.mark.parametrize(
    "q, p",
    [
        (dist.Normal(_t([0.0, 1.0]), _t([1.0, 0.5])), dist.Normal(_t([0.5, -1.0]), _t([2.0, 0.7]))),
        (
            dist.Normal(_t([0.1, -0.3, 2.0]), _t([0.4, 1.2, 1.0])).to_event(1),
            dist.Normal(_t([0.0, 0.0, 0.0]), _t([1.0, 1.0, 1.0])).to_event(1),
        ),
        (
            dist.MultivariateNormal(_t([0.2, -0.2]), scale_tril=_t([[1.0, 0.0], [0.6, 0.5]])),
            dist.MultivariateNormal(_t([0.0, 1.0]), covariance_matrix=_t([[2.0, 0.3], [0.3, 1.0]])),
        ),
    ],
    ids=["normal", "diagonal-multivariate", "full-covariance"],
)
def test_analytic_and_monte_carlo_kl_agree(q, p):
    torch.manual_seed(5)
    exact = kl_divergence(q, p)
    mc = kl_divergence(q, p, method="mc", num_samples=20000)
    assert exact.method == "analytic" and mc.method == "monte-carlo"
    assert exact.value.shape == mc.value.shape == q.batch_shape
    assert ((exact.value - mc.value).abs() < 4 * mc.stderr).all(), (exact, mc)


def _cross_entropy_by_hand(q, p):
    """H(q, p) written out for each family, independently of information.py (which computes
    it as H(q) + KL): the sum over the support, or the Gaussian closed form."""
    if isinstance(q, torch.Tensor):
        return -(q * p.log()).sum()
    if isinstance(q, dist.Categorical):
        return -(q.probs * p.probs.log()).sum(-1)
    if isinstance(q, dist.Bernoulli):  # support {0, 1}
        return -(q.probs * p.probs.log() + (1 - q.probs) * (1 - p.probs).log())
    if isinstance(q, dist.Normal):  # -E_q[log p] = log(sqrt(2 pi) s_p) + (s_q^2 + (m_q - m_p)^2) / (2 s_p^2)
        return 0.5 * torch.log(2 * math.pi * p.scale**2) + (q.scale**2 + (q.loc - p.loc) ** 2) / (2 * p.scale**2)
    if isinstance(q, dist.MultivariateNormal):  # (d log 2 pi + log det S_p + tr(S_p^-1 S_q) + m' S_p^-1 m) / 2
        d, diff = q.loc.shape[-1], q.loc - p.loc
        inv = torch.linalg.inv(p.covariance_matrix)
        return 0.5 * (
            d * math.log(2 * math.pi)
            + torch.logdet(p.covariance_matrix)
            + torch.trace(inv @ q.covariance_matrix)
            + diff @ inv @ diff
        )
    raise TypeError(type(q))


@pytest.mark.parametrize(
    "q, p",
    [
        (_t([0.1, 0.2, 0.3, 0.4]), _t([0.25, 0.25, 0.4, 0.1])),
        (dist.Categorical(probs=_t([0.6, 0.3, 0.1])), dist.Categorical(probs=_t([0.2, 0.2, 0.6]))),
        (dist.Bernoulli(probs=_t([0.1, 0.9])), dist.Bernoulli(probs=_t([0.5, 0.3]))),
        (dist.Normal(_t([0.0, 1.0]), _t([1.0, 0.5])), dist.Normal(_t([0.5, -1.0]), _t([2.0, 0.7]))),
        (
            dist.MultivariateNormal(_t([0.2, -0.2]), scale_tril=_t([[1.0, 0.0], [0.6, 0.5]])),
            dist.MultivariateNormal(_t([0.0, 1.0]), covariance_matrix=_t([[2.0, 0.3], [0.3, 1.0]])),
        ),
    ],
    ids=["vector", "categorical", "bernoulli", "normal", "mvn"],
)
def test_kl_is_cross_entropy_minus_entropy(q, p):
    kl = kl_divergence(q, p)
    ce = cross_entropy(q, p)
    h = entropy(q)
    by_hand = _cross_entropy_by_hand(q, p)
    # cross_entropy against its defining sum or closed form, and torch's registered KL against
    # that independent H(q, p) minus the entropy: each side computed its own way.
    assert torch.allclose(ce.value, by_hand, atol=1e-12, rtol=0)
    assert torch.allclose(kl.value, by_hand - h.value, atol=1e-12, rtol=0)
    if isinstance(q, torch.Tensor):
        return
    torch.manual_seed(6)
    ce_mc = cross_entropy(q, p, method="mc", num_samples=20000)
    kl_mc = kl_divergence(q, p, method="mc", num_samples=20000)
    assert ce_mc.method == kl_mc.method == "monte-carlo"
    # (+1e-12: -log p(X) can be constant, e.g. Bernoulli(0.5), and then stderr is 0.)
    assert ((ce_mc.value - by_hand).abs() < 4 * ce_mc.stderr + 1e-12).all()
    # KL = H(q, p) - H(q) for the Monte Carlo estimates too (independent draws).
    diff = kl_mc.value - (ce_mc.value - h.value)
    assert (diff.abs() < 4 * (kl_mc.stderr**2 + ce_mc.stderr**2).sqrt() + 1e-12).all()


def test_exact_sum_kl_and_cross_entropy_without_a_registered_closed_form():
    # torch registers no KL(Binomial || Categorical): the exact sum over {0..5} is used.
    q = dist.Binomial(total_count=5, probs=_t(0.3))
    torch.manual_seed(7)
    p_probs = _random_probs(6)
    p = dist.Categorical(probs=p_probs)
    q_probs = q.log_prob(torch.arange(6, dtype=F64)).exp()
    kl, ce = kl_divergence(q, p), cross_entropy(q, p)
    assert kl.method == ce.method == "exact-sum"
    assert abs(kl.value.item() - kl_divergence(q_probs, p_probs).value.item()) < 1e-12
    assert abs(ce.value.item() - cross_entropy(q_probs, p_probs).value.item()) < 1e-12


def test_kl_is_infinite_when_q_has_mass_where_p_has_none():
    q, p = _t([0.5, 0.5]), _t([1.0, 0.0])
    assert kl_divergence(q, p).value.item() == math.inf
    assert cross_entropy(q, p).value.item() == math.inf
    assert kl_divergence(p, q).value.item() == pytest.approx(math.log(2), abs=1e-15)


# ---- errors ---------------------------------------------------------------------------------


def test_unit_conversion_and_unknown_unit():
    assert set(UNITS) == {"nats", "bits", "bans", "hartleys"}
    assert from_nats(_t(math.log(2)), "bits").item() == pytest.approx(1.0, abs=1e-15)
    valid = "'nats', 'bits', 'bans', 'hartleys'"
    with pytest.raises(ValueError, match=f"unknown unit 'shannon'.*{valid}"):
        entropy(_t([0.5, 0.5]), unit="shannon")
    with pytest.raises(ValueError, match="unknown unit"):
        information_content(dist.Normal(0.0, 1.0), torch.tensor(0.0), unit="bit")


@pytest.mark.parametrize(
    "probs, message",
    [
        ([0.5, 0.7, -0.2], "non-negative"),
        ([0.5, 0.6], "sums to 1.1"),
        ([[0.5, 0.5], [0.5, 0.5]], "1-D"),
        ([], "non-empty"),
        ([0.5, float("nan")], "finite"),
    ],
)
def test_bad_probability_vectors(probs, message):
    with pytest.raises(ValueError, match=message):
        check_probability_vector(torch.tensor(probs, dtype=F64))
    with pytest.raises(ValueError, match=message):
        entropy(torch.tensor(probs, dtype=F64))


def test_other_bad_inputs():
    normal, other = dist.Normal(0.0, 1.0), dist.Normal(1.0, 2.0)
    with pytest.raises(ValueError, match="unknown method 'exact'"):
        kl_divergence(normal, other, method="exact")
    with pytest.raises(ValueError, match="unknown method"):
        cross_entropy(normal, other, method="MC")
    with pytest.raises(NotImplementedError, match="method='mc'"):
        kl_divergence(log_normal(_t(0.0), _t(1.0)), dist.Normal(_t(0.0), _t(1.0)))
    with pytest.raises(NotImplementedError, match="method='mc'"):
        cross_entropy(log_normal(_t(0.0), _t(1.0)), dist.Gamma(_t(2.0), _t(1.0)))
    with pytest.raises(ValueError, match="num_samples"):
        entropy(log_normal(_t(0.0), _t(1.0)), num_samples=1)
    with pytest.raises(ValueError, match="different outcome sets"):
        kl_divergence(_t([0.5, 0.5]), _t([0.2, 0.3, 0.5]))
    with pytest.raises(ValueError, match="out of range"):
        information_content(_t([0.5, 0.5]), 2)
    with pytest.raises(TypeError, match="probability vector"):
        entropy("uniform")
