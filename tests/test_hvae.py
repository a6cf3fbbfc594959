"""The two-stochastic-layer VAE (pyro_vae.models.hvae): Burda et al.'s architecture, its sites and
contract, the ELBO per layer, training with Trace_ELBO and IWAE, and a short MNIST run."""

import math

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from torch import nn

from pyro_vae import ConfigError, Trainer
from pyro_vae.inference.elbo import elbo_terms
from pyro_vae.inference.evaluate import log_likelihood, posterior_means
from pyro_vae.inference.guide_contract import check_guide
from pyro_vae.inference.objectives import IWAE_ELBO, kl_weighted
from pyro_vae.inference.sites import latent_sites
from pyro_vae.models.hvae import HVAE
from pyro_vae.models.registry import build_model, get_model

SMALL = dict(z_dims=(8, 4), hidden_dims=((32, 32), (16, 16)))
PRIORS = [{"prior": "standard"}, {"prior": "vamp", "num_pseudo_inputs": 10}]
PRIOR_IDS = ["standard", "vamp"]


def binary(b=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(1, 784, generator=g).expand(b, 784)  # one shared pattern: learnable in a few steps
    return torch.bernoulli(probs, generator=g)


def widths(net):
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    return [linears[0].in_features] + [m.out_features for m in linears]


def test_burda_architecture_by_default():
    hvae = HVAE()
    assert hvae.z_dims == (100, 50) and hvae.z_dim == 100 and hvae.activation == "tanh"
    assert widths(hvae.encoder_z1) == [784, 200, 200, 2 * 100]  # q(z1|x): 2 layers of 200
    assert widths(hvae.encoder_z2) == [100, 100, 100, 2 * 50]  # q(z2|z1): 2 layers of 100
    assert widths(hvae.decoder_z1) == [50, 100, 100, 2 * 100]  # p(z1|z2)
    assert widths(hvae.decoder) == [100, 200, 200, 784]  # p(x|z1)
    assert all(isinstance(m, nn.Tanh) for m in hvae.decoder if not isinstance(m, nn.Linear))


@pytest.mark.parametrize("options", PRIORS, ids=PRIOR_IDS)
def test_sites_plate_and_contract(options):
    torch.manual_seed(0)
    hvae = HVAE(**SMALL, **options)
    x = binary(6)
    check_guide(hvae._model, hvae._guide, x)  # every latent site, the model's event shapes
    hvae.check_guide(x)
    assert hvae.guide_checked
    guide_tr = poutine.trace(hvae.guide).get_trace(x.reshape(6, 1, 28, 28), num_data=60)
    model_tr = poutine.trace(poutine.replay(hvae.model, trace=guide_tr)).get_trace(x, num_data=60)
    assert latent_sites(guide_tr) == ["z1", "z2"]  # bottom-up
    assert latent_sites(model_tr) == ["z2", "z1"]  # top-down
    for name, size in (("z1", 8), ("z2", 4)):
        site = guide_tr.nodes[name]
        assert site["fn"].event_shape == (size,) and site["fn"].batch_shape == (6,) and site["fn"].has_rsample
        assert site["scale"] == pytest.approx(10.0)  # N/B of plate "data"
        assert model_tr.nodes[name]["fn"].event_shape == (size,)
    assert model_tr.nodes["x"]["scale"] == pytest.approx(10.0)
    # every parameter is registered with Pyro: raw SVI with a param-store optimizer trains them all
    params = {id(s["value"]) for tr in (guide_tr, model_tr) for s in tr.nodes.values() if s["type"] == "param"}
    assert {id(p) for p in hvae.parameters()} <= params


def test_elbo_terms_split_per_layer():
    torch.manual_seed(0)
    hvae = HVAE(**SMALL)
    x = binary(5)
    torch.manual_seed(1)
    terms = elbo_terms(hvae.model, hvae.guide, x)
    assert list(terms.kl_sites) == ["z2", "z1"]
    assert torch.allclose(terms.kl, terms.kl_sites["z1"] + terms.kl_sites["z2"])
    assert torch.allclose(terms.elbo, terms.recon - terms.kl)
    # the z2 term is the closed form KL(q(z2|z1) || N(0, I)) >= 0 at the sampled z1; z1's is Monte Carlo
    assert (terms.kl_sites["z2"] >= 0).all()
    torch.manual_seed(1)
    mc = elbo_terms(hvae.model, hvae.guide, x, analytic_kl=False)
    assert torch.equal(mc.kl_sites["z1"], terms.kl_sites["z1"]) and torch.equal(mc.recon, terms.recon)
    assert not torch.equal(mc.kl_sites["z2"], terms.kl_sites["z2"])
    # and its sum is Trace_ELBO's loss at the same noise
    torch.manual_seed(1)
    loss = Trace_ELBO().loss(hvae.model, hvae.guide, x)
    assert loss == pytest.approx(-mc.elbo.sum().item(), rel=1e-5)


def test_beta_weights_both_layers():
    torch.manual_seed(0)
    hvae = HVAE(**SMALL)
    x = binary(4)
    model, guide = kl_weighted(hvae.model, 0.25), kl_weighted(hvae.guide, 0.25)
    guide_tr = poutine.trace(guide).get_trace(x)
    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x)
    assert [guide_tr.nodes[n]["scale"] for n in ("z1", "z2")] == [0.25, 0.25]
    assert [model_tr.nodes[n]["scale"] for n in ("z1", "z2", "x")] == [0.25, 0.25, 1.0]


@pytest.mark.parametrize("options", PRIORS, ids=PRIOR_IDS)
@pytest.mark.parametrize("objective", [Trace_ELBO, lambda: IWAE_ELBO(num_particles=4)], ids=["elbo", "iwae"])
def test_raw_svi_trains_and_improves(options, objective):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    hvae = HVAE(**SMALL, **options)
    x = binary(32)
    svi = SVI(hvae.model, hvae.guide, pyro.optim.Adam({"lr": 3e-3}), objective())
    with torch.no_grad():
        before = elbo_terms(hvae.model, hvae.guide, x, num_particles=5).elbo.mean().item()
    for _ in range(60):
        assert math.isfinite(svi.step(x))
    with torch.no_grad():
        after = elbo_terms(hvae.model, hvae.guide, x, num_particles=5).elbo.mean().item()
    assert after > before + 50  # measured gains are in the hundreds of nats


@pytest.mark.parametrize("options", PRIORS, ids=PRIOR_IDS)
def test_log_likelihood_and_conveniences(options):
    torch.manual_seed(0)
    hvae = HVAE(**SMALL, **options)
    x = binary(5)
    with torch.no_grad():
        elbo = elbo_terms(hvae.model, hvae.guide, x, num_particles=200).elbo
    result = log_likelihood(hvae.model, hvae.guide, x, num_samples=200, batch_size=2)
    assert result.log_likelihood.shape == (5,) and torch.isfinite(result.log_likelihood).all()
    assert (result.log_likelihood > elbo).all()  # L_200 above L_1, by far more than the spread here
    assert hvae.posterior(x).event_shape == (8,)
    assert hvae.posterior_mean(x).shape == (5, 8)
    assert hvae.reconstruct(x).shape == (5, 784) and hvae.sample_prior(3).shape == (3, 784)
    assert hvae.decode(torch.zeros(2, 8)).event_shape == (784,)
    assert posterior_means(hvae.guide, x, site="z2").shape == (5, 4)
    rebuilt = build_model(hvae.config)
    assert isinstance(rebuilt, HVAE) and rebuilt.config == hvae.config
    assert get_model("hvae", **SMALL).z_dims == (8, 4)


def test_bad_settings_name_the_fix():
    with pytest.raises(ConfigError, match=r"z_dims must be \(size of z1, size of z2\), got \(100,\)"):
        HVAE(z_dims=(100,))
    with pytest.raises(ConfigError, match=r"hidden_dims must be \(widths between x and z1, widths between z1 and z2\)"):
        HVAE(hidden_dims=((200, 200),))
    with pytest.raises(ConfigError, match=r"unknown prior 'flat'"):
        HVAE(prior="flat")
    with pytest.raises(ConfigError, match=r"unknown model 'ladder'; choose one of \['hvae', 'vae'\]"):
        get_model("ladder")


@pytest.mark.parametrize("options", PRIORS, ids=PRIOR_IDS)
def test_hvae_trains_on_mnist(mnist, options):
    """A short real run of Burda et al.'s architecture: 1,000 MNIST images, 3 epochs with the
    Trainer; the held-out ELBO improves clearly."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    hvae = HVAE(**{**options, "num_pseudo_inputs": 50} if options["prior"] == "vamp" else options)
    trainer = Trainer(hvae)
    test = trainer.prepare_test(mnist.test_images[:200])
    with torch.no_grad():
        before = elbo_terms(hvae.model, hvae.guide, test).elbo.mean().item()
    trainer.fit(mnist.train_images[:1000], None, epochs=3, batch_size=100, progress=False, log=lambda _: None)
    with torch.no_grad():
        after = elbo_terms(hvae.model, hvae.guide, test, num_particles=5).elbo.mean().item()
    assert after > before + 200  # measured: -555 -> -212 (standard), -550 -> -206 (vamp)


def test_kl_per_dimension_of_the_top_layer_sums_to_its_elbo_term():
    """Site z2 (prior N(0, I), diagonal q(z2|z1)): the per-dimension KL at the guide's sample of
    z1 sums to elbo_terms' closed-form z2 term at the same sample."""
    from pyro_vae.inference.evaluate import kl_per_dimension

    torch.manual_seed(0)
    hvae = HVAE(**SMALL)
    x = binary(6)
    torch.manual_seed(3)
    per_dim = kl_per_dimension(hvae.model, hvae.guide, x, site="z2")
    torch.manual_seed(3)
    terms = elbo_terms(hvae.model, hvae.guide, x)
    assert per_dim.shape == (4,) and (per_dim >= 0).all()
    assert per_dim.sum().item() == pytest.approx(terms.kl_sites["z2"].mean().item(), rel=1e-5)
    assert kl_per_dimension(hvae.model, hvae.guide, x, site="z1").shape == (8,)


def test_active_units_per_layer():
    from pyro_vae.inference.evaluate import active_units, active_units_per_site

    torch.manual_seed(0)
    hvae = HVAE(**SMALL)
    x = torch.bernoulli(torch.rand(40, 784, generator=torch.Generator().manual_seed(1)))
    per_site = active_units_per_site(hvae.guide, x, threshold=1e-4, batch_size=16)
    assert list(per_site) == ["z1", "z2"]
    assert torch.equal(per_site["z1"], active_units(posterior_means(hvae.guide, x, site="z1"), 1e-4))
    # E_q[z2|x] is taken at a sampled z1, so only its shape is fixed from call to call
    assert per_site["z1"].shape == (8,) and per_site["z2"].shape == (4,) and per_site["z2"].dtype == torch.bool
