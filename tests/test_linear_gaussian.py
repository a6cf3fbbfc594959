"""Seed items 1 and 6-9 checked exactly on probabilistic PCA, where the posterior is known.

Every stochastic check compares a Monte Carlo estimate with a closed form within
4 standard errors, the standard error measured from repeated estimates.
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from torch.distributions import kl_divergence

from pyro_vae.errors import InvalidDataError
from pyro_vae.inference.elbo import elbo_terms
from pyro_vae.models.linear_gaussian import LinearGaussianGuide, LinearGaussianModel

F64 = torch.float64


def random_model(x_dim=5, z_dim=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(x_dim, z_dim, generator=g, dtype=F64)
    b = torch.randn(x_dim, generator=g, dtype=F64)
    sigma = 0.3 + torch.rand((), generator=g, dtype=F64)
    return LinearGaussianModel(W, b, sigma)


def orthogonal_model(x_dim=6, z_dim=2, sigma=0.5, seed=0):
    """W with orthogonal columns: Wᵀ W is diagonal, hence so is the exact posterior covariance."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(x_dim, z_dim, generator=g, dtype=F64))
    W = Q * torch.linspace(2.0, 1.0, z_dim, dtype=F64)
    return LinearGaussianModel(W, torch.randn(x_dim, generator=g, dtype=F64), sigma)


def random_q(batch, z_dim, seed=1):
    """An arbitrary full-covariance Gaussian q(z|x_i) = N(m_i, L_i L_iᵀ) per datapoint."""
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(batch, z_dim, generator=g, dtype=F64)
    tril = torch.randn(batch, z_dim, z_dim, generator=g, dtype=F64).tril()
    tril.diagonal(dim1=-2, dim2=-1).copy_(0.2 + torch.rand(batch, z_dim, generator=g, dtype=F64))
    return loc, tril


def fixed_guide(q_loc, q_scale_tril):
    """A guide sampling "z" from the given per-datapoint Gaussians, in the model's plate."""
    q = dist.MultivariateNormal(q_loc, scale_tril=q_scale_tril)  # built once: validation is costly

    def guide(x, num_data=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", q)

    return guide


def mean_and_stderr(samples):
    samples = torch.as_tensor(samples, dtype=F64)
    return samples.mean(0), samples.std(0) / math.sqrt(samples.shape[0])


# ---- exact identities ----------------------------------------------------------------------


def test_log_evidence_is_elbo_plus_kl_to_posterior():
    # Seed item 8: log p(x) = ELBO(q) + KL(q || p(z|x)) for ANY q, here full-covariance.
    for seed in range(5):
        model = random_model(seed=seed)
        x = model.sample(7, generator=seed)
        q_loc, q_tril = random_q(7, model.z_dim, seed=seed + 100)
        elbo = model.analytic_elbo(x, q_loc, q_tril)
        gap = model.kl_to_posterior(x, q_loc, q_tril)
        log_px = model.log_evidence(x)
        assert elbo.shape == gap.shape == log_px.shape == (7,)
        assert (log_px - (elbo + gap)).abs().max() < 1e-6  # measured max 8e-14
        assert (gap > 0).all() and (elbo < log_px).all()
        # The closed forms agree with torch's independent KL implementations.
        q = dist.MultivariateNormal(q_loc, scale_tril=q_tril)
        k = model.z_dim
        standard = dist.MultivariateNormal(torch.zeros(k, dtype=F64), torch.eye(k, dtype=F64))
        assert (gap - kl_divergence(q, model.posterior(x))).abs().max() < 1e-10
        terms = model.analytic_elbo_terms(x, q_loc, q_tril)
        assert (terms.kl - kl_divergence(q, standard)).abs().max() < 1e-10


def test_elbo_equals_log_evidence_at_the_exact_posterior():
    model = random_model(seed=3)
    x = model.sample(6, generator=3)
    post = model.posterior(x)
    elbo = model.analytic_elbo(x, post.loc, post.scale_tril)
    assert (elbo - model.log_evidence(x)).abs().max() < 1e-10
    assert model.kl_to_posterior(x, post.loc, post.scale_tril).abs().max() < 1e-10


def test_evidence_is_the_integral_of_the_joint():
    # p(x) = E_{p(z)}[p(x|z)], estimated by simple Monte Carlo over the prior (seed item 6).
    torch.manual_seed(0)
    model = random_model(x_dim=3, z_dim=2, seed=4)
    model = LinearGaussianModel(model.W, model.b, 1.5)  # broad likelihood: low-variance estimator
    x = model.sample(3, generator=4)
    z = model.prior().sample((200000,))
    likelihoods = model.likelihood(z.unsqueeze(1)).log_prob(x).exp()  # [S, B]
    mean, stderr = mean_and_stderr(likelihoods)
    assert ((mean - model.log_evidence(x).exp()).abs() < 4 * stderr).all()


def test_posterior_is_bayes_rule():
    # Seed item 1: log p(z|x) + log p(x) = log p(z) + log p(x|z) at arbitrary z.
    torch.manual_seed(0)
    for seed in range(5):
        model = random_model(seed=seed)
        x = model.sample(4, generator=seed)
        z = 2 * torch.randn(10, 4, model.z_dim, dtype=F64)  # [S, B, k]
        lhs = model.posterior(x).log_prob(z) + model.log_evidence(x)
        rhs = model.prior().log_prob(z) + model.likelihood(z).log_prob(x)
        assert model.posterior(x).batch_shape == (4,)
        assert (lhs - rhs).abs().max() < 1e-8  # measured max 2.3e-13


# ---- the ELBO estimators against the closed form ----------------------------------------------


def test_trace_elbo_matches_analytic_elbo():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model = random_model(seed=5)
    x = model.sample(8, generator=5)
    q_loc, q_tril = random_q(8, model.z_dim, seed=6)
    exact = model.analytic_elbo(x, q_loc, q_tril).sum()
    loss = Trace_ELBO(num_particles=4)
    estimates = [-loss.loss(model.model, fixed_guide(q_loc, q_tril), x) for _ in range(300)]
    mean, stderr = mean_and_stderr(estimates)
    assert (mean - exact).abs() < 4 * stderr, (mean, exact, stderr)


def test_elbo_terms_match_closed_form_with_analytic_kl():
    # pyro_vae.inference.elbo.elbo_terms with a diagonal Normal guide: KL(q || p(z)) is analytic,
    # the reconstruction term E_q[log p(x|z)] is a Monte Carlo estimate.
    pyro.clear_param_store()
    pyro.set_rng_seed(1)
    model = random_model(seed=7)
    x = model.sample(6, generator=7)
    guide = LinearGaussianGuide(model.x_dim, model.z_dim).double()
    with torch.no_grad():
        q_loc, q_tril = guide.loc_scale_tril(x)
        exact = model.analytic_elbo_terms(x, q_loc, q_tril)
        runs = [elbo_terms(model.model, guide, x, num_particles=5) for _ in range(200)]
    assert all((r.kl - exact.kl).abs().max() < 1e-10 for r in runs)
    recon_mean, recon_se = mean_and_stderr(torch.stack([r.recon for r in runs]))
    elbo_mean, elbo_se = mean_and_stderr(torch.stack([r.elbo for r in runs]))
    assert ((recon_mean - exact.recon).abs() < 4 * recon_se).all()
    assert ((elbo_mean - exact.elbo).abs() < 4 * elbo_se).all()


def test_elbo_terms_match_closed_form_with_monte_carlo_kl():
    # A full-covariance guide: no KL(MultivariateNormal || Independent Normal) is
    # registered, so elbo_terms falls back to log q(z|x) - log p(z) at the samples.
    pyro.set_rng_seed(2)
    model = random_model(seed=8)
    x = model.sample(6, generator=8)
    q_loc, q_tril = random_q(6, model.z_dim, seed=9)
    exact = model.analytic_elbo_terms(x, q_loc, q_tril)
    guide = fixed_guide(q_loc, q_tril)
    runs = [elbo_terms(model.model, guide, x, num_particles=5) for _ in range(200)]
    for name in ("recon", "kl", "elbo"):
        mean, stderr = mean_and_stderr(torch.stack([getattr(r, name) for r in runs]))
        assert ((mean - getattr(exact, name)).abs() < 4 * stderr).all(), name


def test_elbo_terms_at_exact_posterior_is_log_evidence_for_every_sample():
    # With q = p(z|x), log p(x, z) - log q(z|x) = log p(x) at every z: a zero-variance check.
    pyro.set_rng_seed(3)
    model = random_model(seed=10)
    x = model.sample(5, generator=10)
    terms = elbo_terms(model.model, model.posterior_guide, x, num_particles=1)
    assert (terms.elbo - model.log_evidence(x)).abs().max() < 1e-8


def test_minibatch_elbo_is_unbiased_for_full_data_elbo():
    # Seed item 9: with num_data=N the plate scales a batch of B by N/B, so the
    # minibatch ELBO averages to the full-data ELBO sum_i ELBO_i.
    pyro.clear_param_store()
    pyro.set_rng_seed(4)
    model = random_model(seed=11)
    N, B = 200, 10
    x = model.sample(N, generator=11)
    guide = LinearGaussianGuide(model.x_dim, model.z_dim).double()
    with torch.no_grad():
        full = model.analytic_elbo(x, *guide.loc_scale_tril(x)).sum()
    loss = Trace_ELBO()
    scaled, unscaled = [], []
    for _ in range(1000):
        batch = x[torch.randperm(N)[:B]]
        scaled.append(-loss.loss(model.model, guide, batch, num_data=N))
        unscaled.append(-loss.loss(model.model, guide, batch) * N / B)
    mean, stderr = mean_and_stderr(scaled)
    assert (mean - full).abs() < 4 * stderr, (mean, full, stderr)
    # Rescaling by hand gives the same estimator, so the N/B factor is exactly the plate's.
    assert (mean_and_stderr(unscaled)[0] - full).abs() < 4 * mean_and_stderr(unscaled)[1]
    # Without the scaling the estimate is off by a factor N/B: the check can fail.
    assert (mean * B / N - full).abs() > 20 * stderr


# ---- learning the exact posterior (seed items 7 and 10) ---------------------------------------


def test_svi_drives_kl_to_posterior_to_zero():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model = orthogonal_model()
    x = model.sample(500, generator=12)
    guide = LinearGaussianGuide(model.x_dim, model.z_dim).double()

    def mean_gap():
        with torch.no_grad():
            q_loc, q_tril = guide.loc_scale_tril(x)
            kl = model.kl_to_posterior(x, q_loc, q_tril)
            return kl.mean(), model.analytic_elbo(x, q_loc, q_tril).mean()

    kl_before, _ = mean_gap()
    steps = 500
    # Adam with the learning rate decayed 0.05 -> 0.0005: a decaying step size averages
    # out the single-sample gradient noise that otherwise sets a KL floor (~0.01).
    optim = pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.01 ** (1 / steps)})
    svi = SVI(model.model, guide, optim, Trace_ELBO())
    for _ in range(steps):
        svi.step(x)
    kl_after, elbo_after = mean_gap()
    # Measured: KL 3.4e-4 nats/datapoint after 500 steps (14.3 at initialization), ~1.5 s.
    assert kl_before > 1.0
    assert kl_after < 2e-3, kl_after
    assert (model.log_evidence(x).mean() - elbo_after).abs() < 2e-3
    # The learned amortized posterior is the Bayes-rule one: mean and covariance.
    post = model.posterior(x)
    with torch.no_grad():
        q_loc, q_scale = guide.loc_scale(x)
    assert (q_loc - post.loc).abs().max() < 0.05
    assert (q_scale[0] - post.covariance_matrix[0].diagonal().sqrt()).abs().max() < 0.01


# ---- interface -----------------------------------------------------------------------------


def test_model_sites_and_scaling_match_the_vae_convention():
    pyro.clear_param_store()
    model = random_model(seed=13)
    x = model.sample(4, generator=13)
    trace = pyro.poutine.trace(model.model).get_trace(x, num_data=20)
    assert trace.nodes["z"]["fn"].event_shape == (model.z_dim,)
    assert trace.nodes["x"]["fn"].event_shape == (model.x_dim,)
    assert trace.nodes["z"]["scale"] == trace.nodes["x"]["scale"] == 5.0
    guide = LinearGaussianGuide(model.x_dim, model.z_dim).double()
    guide_trace = pyro.poutine.trace(guide).get_trace(x, num_data=20)
    assert guide_trace.nodes["z"]["scale"] == 5.0
    assert "linear_gaussian_guide$$$linear.weight" in guide_trace.nodes
    samples = model.sample(3, generator=0)
    assert samples.shape == (3, model.x_dim) and torch.equal(samples, model.sample(3, generator=0))


def test_bad_inputs_raise():
    model = random_model(seed=14)
    x = model.sample(3, generator=14)
    q_loc, q_tril = random_q(3, model.z_dim)
    with pytest.raises(InvalidDataError, match=r"shape \[batch, 5\]"):
        model.log_evidence(x[:, :4])
    with pytest.raises(ValueError, match="lower triangular"):
        model.analytic_elbo(x, q_loc, q_tril.transpose(-1, -2))
    with pytest.raises(ValueError, match="diag_embed"):
        model.kl_to_posterior(x, q_loc, q_tril[..., :2])
    with pytest.raises(ValueError, match="q_loc must have shape"):
        model.analytic_elbo(x, q_loc[:2], q_tril)
    with pytest.raises(ValueError, match="smaller than the batch"):
        pyro.poutine.trace(model.model).get_trace(x, num_data=2)
    with pytest.raises(ValueError, match="positive scalar"):
        LinearGaussianModel(model.W, model.b, -1.0)


def test_decompose_any_guide_into_elbo_and_gap():
    """log p(x) = ELBO + KL(q || p(z|x)) for whatever guide is passed (seed item 8)."""
    from pyro_vae.models.linear_gaussian import decompose

    pyro.clear_param_store()
    model = random_model(seed=4)
    x = model.sample(7, generator=5)
    guide = LinearGaussianGuide(model.x_dim, model.z_dim).double()
    parts = decompose(model, guide, x)
    loc, tril = guide.loc_scale_tril(x)
    assert parts.exact
    assert torch.allclose(parts.elbo, model.analytic_elbo(x, loc, tril), atol=1e-10)
    assert torch.allclose(parts.kl_posterior, model.kl_to_posterior(x, loc, tril), atol=1e-10)
    assert torch.allclose(parts.log_evidence, parts.elbo + parts.kl_posterior, atol=1e-6)
    assert (parts.kl_posterior > 0).all()

    exact = decompose(model, model.posterior_guide, x)  # a MultivariateNormal q: the posterior itself
    assert exact.exact and torch.allclose(exact.kl_posterior, torch.zeros(7, dtype=F64), atol=1e-9)
    assert torch.allclose(exact.elbo, exact.log_evidence, atol=1e-9)

    # A non-Gaussian q (Student-t) falls back to Monte Carlo: the gap is still >= 0 in expectation.
    def student_guide(x, num_data=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.StudentT(5.0, torch.zeros(x.shape[0], model.z_dim, dtype=F64), 0.5).to_event(1))

    torch.manual_seed(0)
    mc = decompose(model, student_guide, x, num_particles=2000)
    assert not mc.exact
    assert torch.allclose(mc.log_evidence, mc.elbo + mc.kl_posterior)
    assert (mc.kl_posterior > 0).all()
