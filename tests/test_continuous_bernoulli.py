"""The continuous Bernoulli likelihood is a normalized density on [0, 1] (Loaiza-Ganem &
Cunningham 2019): its normalizer in closed form, its integral by quadrature, and why its
bits/dim can be negative."""

import math

import numpy as np
import pytest
import torch

from pyro_vae.inference.elbo import bits_per_dim
from pyro_vae.models.likelihoods import get_likelihood

F64 = torch.float64
LAMBDAS = [1e-3, 0.05, 0.3, 0.4995, 0.5, 0.5004, 0.7, 0.99]  # incl. torch's Taylor zone near 1/2


def normalizer(lam: float) -> float:
    """C(lambda) = 2 artanh(1 - 2 lambda) / (1 - 2 lambda), with its limit C(1/2) = 2."""
    if lam == 0.5:
        return 2.0
    return 2 * math.atanh(1 - 2 * lam) / (1 - 2 * lam)


def pixel_density(lam: float):
    """The library's one-pixel density p(x | lambda) as a function of x in [0, 1], float64."""
    logit = torch.tensor([[math.log(lam) - math.log1p(-lam)]], dtype=F64)  # lambda = sigmoid(logit)
    dist = get_likelihood("continuous_bernoulli")(logit)
    return lambda x: dist.log_prob(torch.as_tensor(x, dtype=F64).reshape(-1, 1)).exp().numpy()


def test_the_normalizer_is_two_artanh_over_one_minus_two_lambda():
    assert normalizer(0.5) == 2.0
    # the closed form approaches its limit 2 from both sides (C(l) = 2 + (4/3)(1 - 2l)^2 + ...)
    for eps in (1e-3, 1e-5):
        assert abs(normalizer(0.5 - eps) - 2) < 2 * (2 * eps) ** 2
        assert abs(normalizer(0.5 + eps) - 2) < 2 * (2 * eps) ** 2
    x = torch.linspace(0, 1, 11, dtype=F64)
    for lam in LAMBDAS:
        # log p(x) = x log(lambda) + (1 - x) log(1 - lambda) + log C(lambda), written out here
        expected = x * math.log(lam) + (1 - x) * math.log1p(-lam) + math.log(normalizer(lam))
        got = torch.from_numpy(np.log(pixel_density(lam)(x)))
        assert torch.allclose(got, expected, atol=1e-9, rtol=0), lam


@pytest.mark.parametrize("lam", LAMBDAS)
def test_the_density_integrates_to_one(lam):
    nodes, weights = np.polynomial.legendre.leggauss(64)  # exact for polynomials of degree 127
    x = (nodes + 1) / 2  # [-1, 1] -> [0, 1]
    integral = float((weights / 2 * pixel_density(lam)(x)).sum())
    assert abs(integral - 1) < 1e-10, integral
    # the Bernoulli mass function lambda^x (1 - lambda)^(1 - x), read as a density on [0, 1] (what a
    # Bernoulli likelihood on grey pixels computes), is not normalized: it integrates to 1 / C(lambda)
    bernoulli = float((weights / 2 * lam**x * (1 - lam) ** (1 - x)).sum())
    assert abs(bernoulli - 1 / normalizer(lam)) < 1e-10
    assert bernoulli <= 0.5 + 1e-12  # 1 / C <= 1/2: at least half the mass missing


def test_a_density_above_one_gives_negative_bits_per_dim():
    # A confident pixel (lambda = 0.01) at x = 0 has density (1 - lambda) C(lambda) > 1, so
    # -log p(x) < 0: bits/dim of a density is not a code length and can be negative.
    lam = 0.01
    density_at_zero = float(pixel_density(lam)(np.array([0.0]))[0])
    assert density_at_zero == pytest.approx((1 - lam) * normalizer(lam), rel=1e-10)
    assert density_at_zero > 1
    image_log_density = torch.tensor([784 * math.log(density_at_zero)], dtype=F64)
    assert bits_per_dim(image_log_density, 784).item() < 0
