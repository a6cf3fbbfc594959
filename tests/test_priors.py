"""The VampPrior (pyro_vae.models.priors): its density against a brute-force mixture, its Monte Carlo
KL against closed forms and an independent estimate, its gradients, and training on MNIST."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from torch.distributions import kl_divergence

from pyro_vae import VAE, ConfigError, Trainer
from pyro_vae.inference.elbo import elbo_terms
from pyro_vae.inference.evaluate import log_likelihood
from pyro_vae.inference.objectives import IWAE_ELBO
from pyro_vae.models.hvae import HVAE
from pyro_vae.models.mixture import DiagonalNormalMixture
from pyro_vae.models.priors import VampPrior, cached_priors
from pyro_vae.models.registry import build_model

F64 = torch.float64


def binary(b=6, seed=0):
    return torch.bernoulli(torch.full((b, 784), 0.3, dtype=F64), generator=torch.Generator().manual_seed(seed))


def vamp_vae(k=6, z_dim=3, seed=0):
    torch.manual_seed(seed)
    return VAE(z_dim=z_dim, hidden_dims=(16,), prior="vamp", num_pseudo_inputs=k).double()


def gaussian_log_density(z, loc, scale):
    """log N(z; loc, diag scale^2), written out."""
    return (-0.5 * ((z - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)


def brute_force_log_prior(z, locs, scales):
    """log (1/K) sum_k N(z; loc_k, scale_k^2), one component at a time, shifted by the max."""
    per_component = torch.stack([gaussian_log_density(z, locs[k], scales[k]) for k in range(len(locs))], -1)
    top = per_component.max(-1, keepdim=True).values
    return top.squeeze(-1) + ((per_component - top).exp().mean(-1)).log()


def pseudo_posteriors(vae):
    with torch.no_grad():
        return vae.encoder.encoder(vae.vamp.pseudo_inputs())  # (loc [K, z], scale [K, z])


def test_vamp_density_is_the_brute_force_mixture():
    vae = vamp_vae()
    x = binary()
    locs, scales = pseudo_posteriors(vae)
    z = torch.randn(50, 6, 3, dtype=F64, generator=torch.Generator().manual_seed(1)) * 2
    with torch.no_grad():
        prior = vae.prior_distribution(x)
        assert isinstance(prior, DiagonalNormalMixture)  # a MixtureSameFamily with the matrix-product density
        assert prior.batch_shape == (6,) and prior.event_shape == (3,)
        error = (prior.log_prob(z) - brute_force_log_prior(z, locs, scales)).abs().max().item()
    assert error < 1e-10  # measured ~1e-15
    # the pseudo-inputs are images: pixels in (0, 1)
    u = vae.vamp.pseudo_inputs()
    assert u.shape == (6, 784) and (u > 0).all() and (u < 1).all()


def test_matrix_product_density_in_float32_against_the_float64_brute_force():
    """The expanded square nearly cancels for sharp components and far codes; formed in float64 it
    keeps a float32 mixture as exact as float32 can be, and its gradients are the element-wise
    mixture's. Sampling and shapes are MixtureSameFamily's."""
    g = torch.Generator().manual_seed(0)
    k, d, b = 40, 8, 16
    locs = (3 * torch.randn(k, d, generator=g)).requires_grad_()
    scales = (torch.rand(k, d, generator=g) * 0.5 + 0.01).requires_grad_()  # down to 0.01: sharp
    weights = dist.Categorical(logits=torch.zeros(k))
    fast = DiagonalNormalMixture.of(dist.Normal(locs, scales).to_event(1)).expand([b])
    slow = dist.MixtureSameFamily(weights, dist.Normal(locs, scales).to_event(1)).expand([b])
    z = torch.cat(
        [
            locs[: b // 2].detach() + 0.02 * torch.randn(b // 2, d, generator=g),  # near a sharp component
            6 * torch.randn(b // 2, d, generator=g),
        ]
    )  # far from all of them
    exact = brute_force_log_prior(z.double(), locs.double(), scales.double())
    ours = fast.log_prob(z)
    assert ours.dtype == torch.float32 and ours.shape == (b,)
    assert ((ours.double() - exact).abs() / exact.abs().clamp(min=1)).max() < 1e-6
    with torch.no_grad():  # evaluation's path: the log-sum-exp's tail in float32, as exact
        evaluated = fast.log_prob(z)
    assert evaluated.dtype == torch.float32
    assert ((evaluated.double() - exact).abs() / exact.abs().clamp(min=1)).max() < 1e-6
    for ours_grad, their_grad in zip(
        torch.autograd.grad(ours.sum(), [locs, scales]), torch.autograd.grad(slow.log_prob(z).sum(), [locs, scales])
    ):
        assert torch.allclose(ours_grad, their_grad, rtol=1e-3, atol=1e-3 * their_grad.abs().max().item())
    assert fast.sample((3,)).shape == (3, b, d)
    assert fast.log_prob(torch.randn(5, b, d)).shape == (5, b)
    assert fast.log_prob(torch.randn(d)).shape == (b,)  # broadcast over the batch


def test_density_in_blocks_is_the_density_in_one_piece(monkeypatch):
    """Points go through the product in blocks of block_elements // K rows; block edges change nothing, and the
    [2D+1, K] weights built without gradients are kept and shared by every expanded copy."""
    g = torch.Generator().manual_seed(1)
    k, d = 30, 5
    locs, scales = torch.randn(k, d, generator=g), torch.rand(k, d, generator=g) + 0.1
    z = 2 * torch.randn(7, 11, d, generator=g)
    mixture = DiagonalNormalMixture.of(dist.Normal(locs, scales).to_event(1))
    whole = mixture.expand([11]).log_prob(z)
    monkeypatch.setattr(DiagonalNormalMixture, "block_elements", 4 * k)  # 77 points: 19 blocks of 4 and one of 1
    with torch.no_grad():
        first, second = mixture.expand([11]), mixture.expand([11])
        in_blocks = first.log_prob(z)
        built = first._built[0]
        assert built is not None and second._built[0] is built  # built once, seen by every copy
    assert torch.equal(in_blocks, whole)
    exact = brute_force_log_prior(z.double(), locs.double(), scales.double())
    assert (whole.double() - exact).abs().max() < 1e-5


def sharp_mixture(k=40, d=8, seed=0):
    """Components as in the float32 test above: scales down to 0.01, means near 3."""
    g = torch.Generator().manual_seed(seed)
    locs, scales = 3 * torch.randn(k, d, generator=g), torch.rand(k, d, generator=g) * 0.5 + 0.01
    return DiagonalNormalMixture.of(dist.Normal(locs, scales).to_event(1)), locs, scales, g


def posterior_codes(locs, g, codes=300, width=0.05):
    """``codes`` draws about each of six datapoints' centres ([codes, 6, D]): three centres at sharp
    components, three elsewhere; ``width`` the posterior's scale."""
    d = locs.shape[1]
    centres = torch.cat([locs[:3] + 0.02 * torch.randn(3, d, generator=g), 3 * torch.randn(3, d, generator=g)])
    return centres + width * torch.randn(codes, 6, d, generator=g)


def test_many_codes_per_datapoint_take_the_centred_float32_product(monkeypatch):
    """Without gradients, 300 codes per datapoint go through the float32 product about each datapoint's
    centre: as close to the float64 brute force as the float64 product's own float32 result (1e-6 of the
    value), where the same product of the expanded square in float32, without the centring, is not."""
    mixture, locs, scales, g = sharp_mixture()
    z = posterior_codes(locs, g)
    exact = brute_force_log_prior(z.double(), locs.double(), scales.double())
    expanded = []
    monkeypatch.setattr(
        DiagonalNormalMixture,
        "_expanded_log_prob",
        lambda self, points: expanded.append(points) or pytest.fail("the centred product should have been used"),
    )
    with torch.no_grad():
        ours = mixture.expand([6]).log_prob(z)
    assert ours.dtype == torch.float32 and ours.shape == (300, 6) and not expanded
    assert ((ours.double() - exact).abs() / exact.abs().clamp(min=1)).max() < 1e-6  # measured 2e-7
    with torch.no_grad():  # the expanded square's features times its weights, all in float32
        features = torch.cat([z.pow(2), z, torch.ones(300, 6, 1)], -1)
        uncentred = torch.logsumexp(features @ mixture._linear_weights().float(), -1) - math.log(40)
    assert ((uncentred.double() - exact).abs() / exact.abs().clamp(min=1)).max() > 1e-5  # measured 6e-5


def test_codes_far_from_their_centre_or_too_few_take_the_float64_product(monkeypatch):
    """Codes spread over many widths of a sharp component, or fewer than centred_min_codes per datapoint,
    or with gradients: the float64 product of the expanded square, as exact as before."""
    mixture, locs, scales, g = sharp_mixture(seed=1)
    spread = 6 * torch.randn(100, 6, 8, generator=g)  # far beyond centred_max_spread of each centre
    few = posterior_codes(locs, g, codes=DiagonalNormalMixture.centred_min_codes - 1)
    for z in (spread, few):
        exact = brute_force_log_prior(z.double(), locs.double(), scales.double())
        with torch.no_grad():
            ours = mixture.expand([6]).log_prob(z)
        assert ((ours.double() - exact).abs() / exact.abs().clamp(min=1)).max() < 1e-6
        monkeypatch.setattr(DiagonalNormalMixture, "centred_min_codes", 10**9)  # force the float64 product
        with torch.no_grad():
            assert torch.equal(mixture.expand([6]).log_prob(z), ours)
        monkeypatch.undo()


def test_centred_product_in_blocks_is_the_centred_product_in_one_piece(monkeypatch):
    """Blocks of datapoints, and blocks of one datapoint's codes when they alone exceed block_elements,
    give the one-piece density to float32 rounding."""
    mixture, locs, scales, g = sharp_mixture(seed=2)
    z = posterior_codes(locs, g, codes=100)
    with torch.no_grad():
        whole = mixture.expand([6]).log_prob(z)
        monkeypatch.setattr(DiagonalNormalMixture, "block_elements", 250 * 40)  # two datapoints a block
        two = mixture.expand([6]).log_prob(z)
        monkeypatch.setattr(DiagonalNormalMixture, "block_elements", 30 * 40)  # each datapoint's codes in four
        parts = mixture.expand([6]).log_prob(z)
    assert torch.allclose(two, whole, rtol=0, atol=1e-5) and torch.allclose(parts, whole, rtol=0, atol=1e-5)


def test_cached_priors_encode_the_pseudo_inputs_once_and_change_no_estimate():
    """Under cached_priors (which log_likelihood enters) the encoder sees the pseudo-inputs once per
    evaluation, not once per chunk of particles; with gradients on, or outside the block, at every call.
    The estimate is the one without the cache, particle for particle (the same seed draws the same z)."""
    vae = vamp_vae(k=6, z_dim=3, seed=5)
    x = binary(4, seed=6)
    calls = []
    encode = vae.encoder.distribution
    vae.encoder.distribution = lambda u: calls.append(len(u)) or encode(u)
    pseudo = 6  # the encoder's calls on the K pseudo-inputs, not on data
    torch.manual_seed(0)
    cached = log_likelihood(vae.model, vae.guide, x, num_samples=40, batch_size=2, particles_per_chunk=10)
    assert calls.count(pseudo) == 1  # 2 data chunks x 4 particle chunks: 8 model calls, one encoding
    calls.clear()
    with pyro.validation_enabled(False), torch.no_grad():
        for _ in range(3):
            vae.prior_distribution(x)
    assert calls.count(pseudo) == 3  # no block: built at every call
    calls.clear()
    with cached_priors():
        for _ in range(3):
            vae.prior_distribution(x)  # gradients on: a fresh graph each time
        with torch.no_grad():
            for _ in range(3):
                vae.prior_distribution(x)
    assert calls.count(pseudo) == 4
    # the same particles without the cache: what log_likelihood computed before it had one
    from pyro_vae.inference import evaluate

    torch.manual_seed(0)
    plain = evaluate._log_likelihood(vae.model, vae.guide, x, 40, 2, 10, 5000, None, None)
    assert torch.allclose(cached.log_likelihood, plain.log_likelihood, atol=1e-12, rtol=0)


def test_one_pseudo_input_gives_the_closed_form_kl():
    """K = 1: p(z) = q(z|u_1), a diagonal Gaussian, so KL(q(z|x) || p(z)) has a closed form that
    the Monte Carlo estimate of elbo_terms must average to."""
    vae = vamp_vae(k=1, z_dim=4, seed=3)
    x = binary(5, seed=4)
    (loc_u, scale_u) = pseudo_posteriors(vae)
    with torch.no_grad():
        q_loc, q_scale = vae.encoder.encoder(x)
        exact = kl_divergence(dist.Normal(q_loc, q_scale).to_event(1), dist.Normal(loc_u[0], scale_u[0]).to_event(1))
        torch.manual_seed(0)
        with pyro.validation_enabled(False):
            draws = torch.stack([elbo_terms(vae.model, vae.guide, x).kl_sites["z"] for _ in range(400)])
    mean, stderr = draws.mean(0), draws.std(0) / math.sqrt(len(draws))
    assert ((mean - exact).abs() < 4 * stderr).all()
    assert (draws < 0).any() or (draws.std(0) > 0).all()  # a Monte Carlo estimate, not the closed form


def test_monte_carlo_kl_matches_a_brute_force_estimate():
    """KL(q(z|x) || (1/K) sum_k q(z|u_k)) from elbo_terms (the model's MixtureSameFamily, Monte
    Carlo fallback) against an independent estimate with the brute-force mixture density."""
    vae = vamp_vae(k=8, z_dim=3, seed=5)
    x = binary(4, seed=6)
    locs, scales = pseudo_posteriors(vae)
    with torch.no_grad(), pyro.validation_enabled(False):
        q_loc, q_scale = vae.encoder.encoder(x)
        g = torch.Generator().manual_seed(7)
        z = q_loc + q_scale * torch.randn(4000, *q_loc.shape, dtype=F64, generator=g)
        brute = gaussian_log_density(z, q_loc, q_scale) - brute_force_log_prior(z, locs, scales)
        torch.manual_seed(8)
        ours = torch.stack([elbo_terms(vae.model, vae.guide, x, analytic_kl=True).kl_sites["z"] for _ in range(400)])
    se = (brute.var(0) / len(brute) + ours.var(0) / len(ours)).sqrt()
    assert ((brute.mean(0) - ours.mean(0)).abs() < 4 * se).all()
    assert (brute.mean(0) > 0).all()  # a KL


def test_gradients_reach_the_pseudo_inputs_and_the_encoder_through_the_prior():
    vae = vamp_vae(k=5)
    x = binary()
    loss = Trace_ELBO().differentiable_loss(vae.model, vae.guide, x)
    loss.backward()
    assert vae.vamp.raw_pseudo_inputs.grad is not None and vae.vamp.raw_pseudo_inputs.grad.abs().sum() > 0
    # the prior alone moves the encoder: log p(z) at a fixed z depends on q(z|u_k)
    vae.zero_grad()
    z = torch.zeros(6, 3, dtype=F64)
    vae.prior_distribution(x).log_prob(z).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in vae.encoder.parameters())
    assert all(p.grad is None for p in vae.decoder.parameters())


def test_vamp_vae_interface_config_and_errors():
    vae = vamp_vae(k=4)
    x = binary()
    assert vae.config["prior"] == "vamp" and vae.config["num_pseudo_inputs"] == 4
    rebuilt = build_model(vae.config)
    assert rebuilt.config == vae.config
    assert "prior" not in VAE(z_dim=3, hidden_dims=(8,)).config  # earlier checkpoints keep their config
    assert vae.sample_prior(7).shape == (7, 784)
    assert vae.reconstruct(x).shape == (6, 784)
    vae.check_guide(x)
    result = log_likelihood(vae.model, vae.guide, x, num_samples=20)
    assert torch.isfinite(result.log_likelihood).all()
    with pytest.raises(ConfigError, match=r"unknown prior 'flat'; choose one of \['standard', 'vamp'\]"):
        VAE(prior="flat")

    def plain_guide(x, num_data=None):
        pass

    with pytest.raises(ConfigError, match=r"prior='vamp' evaluates the guide's q\(z\|u\).*custom:plain_guide has none"):
        VAE(z_dim=3, guide=plain_guide, prior="vamp")
    with pytest.raises(ConfigError, match=r"init must have shape \[3, 10\]"):
        VampPrior(3, 10, init=torch.rand(2, 10))
    init = torch.rand(3, 10)
    assert torch.allclose(VampPrior(3, 10, init=init).pseudo_inputs(), init.clamp(1e-3, 1 - 1e-3), atol=1e-6)


def test_hvae_top_layer_vamp_density_is_the_brute_force_mixture():
    torch.manual_seed(0)
    hvae = HVAE(z_dims=(6, 3), hidden_dims=((16,), (8,)), prior="vamp", num_pseudo_inputs=5).double()
    x = binary(4)
    with torch.no_grad():
        loc_z1, _ = hvae.encoder_z1(hvae.vamp.pseudo_inputs())
        locs, scales = hvae.encoder_z2(loc_z1)
        z2 = torch.randn(30, 4, 3, dtype=F64, generator=torch.Generator().manual_seed(2))
        error = (hvae.prior_z2(x, 4).log_prob(z2) - brute_force_log_prior(z2, locs, scales)).abs().max().item()
    assert error < 1e-10


def test_vamp_vae_trains_on_mnist(mnist):
    """A short real run: 1,000 MNIST images, 3 epochs; the held-out ELBO improves clearly."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    vae = VAE(z_dim=16, hidden_dims=(128,), prior="vamp", num_pseudo_inputs=50)
    trainer = Trainer(vae)
    test = trainer.prepare_test(mnist.test_images[:200])
    with torch.no_grad():
        before = elbo_terms(vae.model, vae.guide, test).elbo.mean().item()
    pseudo_before = vae.vamp.raw_pseudo_inputs.detach().clone()
    trainer.fit(mnist.train_images[:1000], None, epochs=3, batch_size=100, progress=False, log=lambda _: None)
    with torch.no_grad():
        after = elbo_terms(vae.model, vae.guide, test, num_particles=5).elbo.mean().item()
    assert after > before + 200  # measured: -563 -> -212
    assert not torch.equal(vae.vamp.raw_pseudo_inputs.detach(), pseudo_before)  # the prior was learned


def test_vamp_with_each_built_in_guide():
    x = binary(3).float()
    for guide in ("diagonal", "conv", "full_covariance"):
        vae = VAE(z_dim=4, hidden_dims=(16,), guide=guide, prior="vamp", num_pseudo_inputs=5)
        assert math.isfinite(Trace_ELBO().loss(vae.model, vae.guide, x))
        assert torch.isfinite(log_likelihood(vae.model, vae.guide, x, num_samples=4).log_likelihood).all()
    with pytest.raises(
        ConfigError, match=r"^prior='vamp' needs the guide's density q\(z\|u_k\) .* the iaf guide cannot give"
    ):
        VAE(z_dim=4, hidden_dims=(16,), guide="iaf", prior="vamp", num_pseudo_inputs=5)


@pytest.mark.parametrize("objective", [Trace_ELBO, lambda: IWAE_ELBO(num_particles=4)], ids=["elbo", "iwae"])
def test_raw_svi_trains_a_vamp_vae(objective):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    vae = VAE(z_dim=4, hidden_dims=(32,), prior="vamp", num_pseudo_inputs=10)
    g = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.rand(1, 784, generator=g).expand(32, 784), generator=g)
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 3e-3}), objective())
    with torch.no_grad():
        before = elbo_terms(vae.model, vae.guide, x, num_particles=5).elbo.mean().item()
    pseudo_before = vae.vamp.raw_pseudo_inputs.detach().clone()
    for _ in range(60):
        assert math.isfinite(svi.step(x))
    with torch.no_grad():
        after = elbo_terms(vae.model, vae.guide, x, num_particles=5).elbo.mean().item()
    assert after > before + 50
    assert not torch.equal(vae.vamp.raw_pseudo_inputs.detach(), pseudo_before)  # a param-store param too
