"""Importance-sampled log-likelihood, active units and KL per dimension."""

import pyro
import pytest
import torch

from pyro_vae import VAE, LinearGaussianModel, Trainer, elbo_terms
from pyro_vae.inference.evaluate import active_units, kl_per_dimension, log_likelihood, posterior_means

F64 = torch.float64


def exact_setup(seed=0, n=12):
    g = torch.Generator().manual_seed(seed)
    model = LinearGaussianModel(torch.randn(6, 3, generator=g, dtype=F64), torch.randn(6, generator=g, dtype=F64), 0.4)
    return model, model.sample(n, generator=seed + 1)


def poor_guide(model, shift=0.1, inflate=1.3):
    """The exact posterior, shifted and widened: an imperfect proposal with finite-variance weights."""

    def guide(x, num_data=None):
        post = model.posterior(x)
        q = pyro.distributions.MultivariateNormal(post.loc + shift, scale_tril=inflate * post.scale_tril)
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("z", q)

    return guide


def test_exact_posterior_gives_log_evidence_with_zero_spread():
    model, x = exact_setup()
    result = log_likelihood(
        model.model, model.posterior_guide, x, num_samples=300, batch_size=5, particles_per_chunk=70
    )
    assert result.log_likelihood.shape == (12,)
    assert torch.allclose(result.log_likelihood, model.log_evidence(x), atol=1e-10)
    assert torch.allclose(result.ess, torch.full((12,), 300.0, dtype=F64))  # every weight equals p(x)
    assert result.stderr.max() < 1e-6


def test_poor_guide_converges_to_log_evidence_as_k_grows():
    pyro.clear_param_store()
    torch.manual_seed(0)
    model, x = exact_setup(seed=1)
    guide = poor_guide(model)
    truth = model.log_evidence(x)
    errors = {}
    for k in (10, 1000, 100_000):
        result = log_likelihood(model.model, guide, x, num_samples=k)
        errors[k] = (truth - result.log_likelihood).abs().mean().item()
        if k == 100_000:
            assert ((result.log_likelihood - truth).abs() < 5 * result.stderr + 1e-4).all()
            assert (result.ess > 1000).all()
    assert errors[10] > errors[1000] > errors[100_000]
    assert errors[100_000] < 0.01


def test_chunking_does_not_change_the_estimate():
    pyro.clear_param_store()
    model, x = exact_setup(seed=2)
    guide = poor_guide(model)
    torch.manual_seed(0)
    one = log_likelihood(model.model, guide, x, num_samples=20_000)
    torch.manual_seed(1)
    many = log_likelihood(model.model, guide, x, num_samples=20_000, batch_size=5, particles_per_chunk=333)
    se = (one.stderr**2 + many.stderr**2).sqrt()
    assert ((one.log_likelihood - many.log_likelihood).abs() < 5 * se).all()
    assert se.max() < 0.02
    # the mean's error: the datapoints' errors added in quadrature, over N
    assert one.nll_stderr() == pytest.approx(float((one.stderr**2).sum().sqrt()) / len(x))
    assert abs(one.nll() - many.nll()) < 5 * (one.nll_stderr() ** 2 + many.nll_stderr() ** 2) ** 0.5


def test_vae_log_likelihood_is_above_its_elbo(mnist):
    pyro.set_rng_seed(0)
    trainer = Trainer(VAE(z_dim=8, hidden_dims=(64,)))
    trainer.fit(mnist.train_images[:1000], None, epochs=3, batch_size=100, progress=False, log=lambda _: None)
    test = trainer.prepare_test(mnist.test_images[:100])
    vae = trainer.vae
    with torch.no_grad():
        elbo = elbo_terms(vae.model, vae.guide, test, num_particles=50).elbo
    result = log_likelihood(vae.model, vae.guide, test, num_samples=500)
    assert (result.log_likelihood > elbo - 4 * result.stderr - 0.5).all()
    assert result.log_likelihood.mean() > elbo.mean() + 0.1  # the IWAE bound improves on the ELBO
    assert result.nll() == pytest.approx(-result.log_likelihood.mean().item())


def test_active_units_and_kl_per_dimension(mnist):
    means = torch.stack([torch.randn(5000) * s for s in (1.0, 0.5, 0.05, 0.001)], 1)
    assert active_units(means).tolist() == [True, True, False, False]

    vae = VAE(z_dim=5, hidden_dims=(32,))
    x = torch.bernoulli(mnist.test_images[:300], generator=torch.Generator().manual_seed(0))
    per_dim = kl_per_dimension(vae.model, vae.guide, x, batch_size=128)
    total = elbo_terms(vae.model, vae.guide, x).kl.mean()
    assert per_dim.shape == (5,) and (per_dim >= 0).all()
    assert per_dim.sum().item() == pytest.approx(total.item(), rel=1e-5)
    assert posterior_means(vae.guide, x, batch_size=100).shape == (300, 5)
