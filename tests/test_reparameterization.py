"""Seed item 11: z = mu + sigma * eps carries gradients to mu and sigma."""

import math

import pyro.distributions as dist
import pytest
import torch

from pyro_vae.inference.reparameterization import reparameterize

F64 = torch.float64


def test_reparameterize_is_rsample():
    loc = torch.tensor([0.5, -1.0, 2.0], dtype=F64)
    scale = torch.tensor([0.1, 1.0, 3.0], dtype=F64)
    torch.manual_seed(0)
    eps = torch.randn(4, 3, dtype=F64)
    torch.manual_seed(0)
    rsampled = dist.Normal(loc, scale).rsample((4,))
    assert torch.equal(reparameterize(loc, scale, eps), rsampled)
    torch.manual_seed(0)
    assert torch.equal(reparameterize(loc, scale, sample_shape=(4,)), rsampled)
    with pytest.raises(ValueError, match="positive"):
        reparameterize(loc, -scale)


@pytest.mark.parametrize("sampler", ["reparameterize", "rsample"])
def test_reparameterized_gradient_of_quadratic(sampler):
    # f(z) = sum_j a_j z_j^2 + c_j z_j, so E f = sum_j a_j (mu_j^2 + sigma_j^2) + c_j mu_j and
    # dE/dmu_j = 2 a_j mu_j + c_j, dE/dsigma_j = 2 a_j sigma_j.
    torch.manual_seed(1)
    a = torch.tensor([1.0, -0.5, 2.0], dtype=F64)
    c = torch.tensor([0.3, 1.0, -2.0], dtype=F64)
    mu0 = torch.tensor([0.4, -1.2, 0.7], dtype=F64)
    sigma0 = torch.tensor([0.5, 1.5, 0.2], dtype=F64)
    S = 20000
    # One leaf copy of (mu, sigma) per sample, so autograd returns per-sample gradients
    # and their spread gives the Monte Carlo standard error.
    mu = mu0.expand(S, 3).clone().requires_grad_()
    sigma = sigma0.expand(S, 3).clone().requires_grad_()
    if sampler == "reparameterize":
        z = reparameterize(mu, sigma)
    else:
        z = dist.Normal(mu, sigma).rsample()
    (a * z**2 + c * z).sum().backward()
    for grad, expected in ((mu.grad, 2 * a * mu0 + c), (sigma.grad, 2 * a * sigma0)):
        mean, stderr = grad.mean(0), grad.std(0) / math.sqrt(S)
        assert ((mean - expected).abs() < 4 * stderr).all(), (mean, expected, stderr)
    # A shared (mu, sigma) receives the average of the per-sample gradients.
    mu_shared = mu0.clone().requires_grad_()
    sigma_shared = sigma0.clone().requires_grad_()
    z = reparameterize(mu_shared, sigma_shared, (z.detach() - mu0) / sigma0)
    (a * z**2 + c * z).sum(-1).mean().backward()
    assert torch.allclose(mu_shared.grad, mu.grad.mean(0), atol=1e-12, rtol=0)
    assert torch.allclose(sigma_shared.grad, sigma.grad.mean(0), atol=1e-12, rtol=0)
