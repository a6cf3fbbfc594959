"""Property tests (hypothesis): the information identities on random distributions, and data
validation on random shapes and values -- every invalid input raises InvalidDataError,
every valid one passes."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Bernoulli, Binomial, Categorical

from pyro_vae import VAE, InvalidDataError
from pyro_vae.data.images import check_pixels
from pyro_vae.inference.information import cross_entropy, entropy, kl_divergence
from pyro_vae.models.likelihoods import BernoulliLikelihood, ContinuousBernoulliLikelihood

FAST = settings(max_examples=75, deadline=None)
LN2 = math.log(2.0)

# ---- strategies ---------------------------------------------------------------------------------

weights = st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=12).filter(lambda w: sum(w) > 1e-6)


def normalized(w):
    p = torch.tensor(w, dtype=torch.float64)
    return p / p.sum()


prob_vectors = weights.map(normalized)


@st.composite
def prob_pairs(draw, positive_p=False):
    """Two probability vectors over the same outcomes; ``p`` strictly positive if asked."""
    n = draw(st.integers(1, 12))
    low = 1e-3 if positive_p else 0.0
    q = draw(st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n).filter(lambda w: sum(w) > 1e-6))
    p = draw(st.lists(st.floats(low, 1.0), min_size=n, max_size=n).filter(lambda w: sum(w) > 1e-6))
    return normalized(q), normalized(p)


probabilities = st.floats(0.0, 1.0)
discrete_distributions = st.one_of(
    prob_vectors.map(lambda p: Categorical(probs=p)),
    st.lists(probabilities, min_size=1, max_size=6).map(
        lambda p: Bernoulli(probs=torch.tensor(p, dtype=torch.float64))
    ),
    st.tuples(st.integers(0, 20), probabilities).map(
        lambda a: Binomial(total_count=a[0], probs=torch.tensor(a[1], dtype=torch.float64))
    ),
)

# pixel values: mostly valid, sometimes at or past the edges of [0, 1], sometimes not finite
pixel_values = st.one_of(
    st.floats(0.0, 1.0),
    st.sampled_from([0.0, 1.0, -0.0, 1e-8, 1 - 1e-7, -1e-6, 1 + 1e-6, 255.0, -1.0, math.nan, math.inf, -math.inf]),
)


@st.composite
def pixel_batches(draw):
    rows, cols = draw(st.integers(0, 4)), draw(st.integers(1, 6))
    values = draw(st.lists(pixel_values, min_size=rows * cols, max_size=rows * cols))
    return torch.tensor(values, dtype=torch.float32).reshape(rows, cols)


# ---- information ----------------------------------------------------------------------------------


@FAST
@given(discrete_distributions)
def test_entropy_of_a_discrete_distribution_is_non_negative(d):
    h = entropy(d).value
    assert bool((h >= -1e-12).all()), h


@FAST
@given(prob_vectors)
def test_entropy_of_a_probability_vector_is_non_negative_and_at_most_log_n(p):
    h = entropy(p).value.item()
    assert -1e-12 <= h <= math.log(len(p)) + 1e-9


@FAST
@given(prob_pairs())
def test_kl_is_non_negative(pair):
    q, p = pair
    assert kl_divergence(q, p).value.item() >= -1e-12


@FAST
@given(prob_vectors)
def test_kl_of_a_distribution_with_itself_is_zero(p):
    assert kl_divergence(p, p).value.item() == pytest.approx(0.0, abs=1e-12)
    assert kl_divergence(Categorical(probs=p), Categorical(probs=p)).value.item() == pytest.approx(0.0, abs=1e-12)


@FAST
@given(prob_pairs(positive_p=True))
def test_kl_is_cross_entropy_minus_entropy(pair):
    q, p = pair
    kl = kl_divergence(q, p).value.item()
    assert kl == pytest.approx(cross_entropy(q, p).value.item() - entropy(q).value.item(), rel=1e-9, abs=1e-9)


@FAST
@given(prob_pairs())
def test_kl_is_infinite_where_q_has_mass_that_p_lacks(pair):
    q, p = pair
    kl = kl_divergence(q, p).value.item()
    if bool(((q > 0) & (p == 0)).any()):
        assert kl == math.inf
    else:
        assert math.isfinite(kl)


@FAST
@given(prob_pairs(positive_p=True))
def test_bits_are_nats_over_ln_2(pair):
    q, p = pair
    for f in (
        lambda unit: entropy(q, unit),
        lambda unit: kl_divergence(q, p, unit),
        lambda unit: cross_entropy(q, p, unit),
    ):
        assert f("bits").value.item() == pytest.approx(f("nats").value.item() / LN2, rel=1e-12, abs=1e-12)


# ---- data validation ------------------------------------------------------------------------------


@FAST
@given(pixel_batches())
def test_check_pixels_refuses_exactly_the_invalid_batches(x):
    valid = x.shape[0] > 0 and bool((torch.isfinite(x) & (x >= 0) & (x <= 1)).all())
    if valid:
        check_pixels(x)
    else:
        with pytest.raises(InvalidDataError):
            check_pixels(x)


X_DIM = 12
VAE_12 = VAE(x_dim=X_DIM, z_dim=2, hidden_dims=(4,))


@FAST
@given(
    st.lists(st.integers(0, 6), min_size=0, max_size=4),
    st.sampled_from([torch.float32, torch.float64, torch.int64, torch.uint8, torch.bool]),
)
def test_flatten_accepts_exactly_batches_of_x_dim_pixels_of_the_parameters_dtype(shape, dtype):
    x = torch.zeros(shape, dtype=dtype)
    # float pixels of the parameters' dtype (float32): float64 is refused, naming x.float() or vae.double()
    valid = len(shape) >= 2 and math.prod(shape[1:]) == X_DIM and dtype == torch.float32
    if valid:
        assert VAE_12.flatten(x).shape == (shape[0], X_DIM)
    else:
        with pytest.raises(InvalidDataError):
            VAE_12.flatten(x)


@FAST
@given(pixel_batches())
def test_bernoulli_support_is_exactly_zero_and_one(x):
    if bool(((x == 0) | (x == 1)).all()):
        BernoulliLikelihood().check_support(x)
    else:
        with pytest.raises(InvalidDataError, match="binarize"):
            BernoulliLikelihood().check_support(x)


@FAST
@given(pixel_batches())
def test_continuous_bernoulli_support_is_the_closed_unit_interval(x):
    if bool(((x >= 0) & (x <= 1)).all()):  # NaN fails both comparisons
        ContinuousBernoulliLikelihood().check_support(x)
    else:
        with pytest.raises(InvalidDataError, match=r"\[0, 1\]"):
            ContinuousBernoulliLikelihood().check_support(x)
