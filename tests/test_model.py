"""The VAE's model and guide: sites, shapes, plate, likelihoods, and the ELBO they define."""

import math

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.poutine.util import site_is_subsample

from pyro_vae import VAE, InvalidDataError, elbo_terms

B, Z = 6, 4


def binary_batch(b=B, seed=1):
    return torch.bernoulli(torch.full((b, 784), 0.3), generator=torch.Generator().manual_seed(seed))


def data_plate(site):
    frames = [f for f in site["cond_indep_stack"] if f.name == "data"]
    assert len(frames) == 1, f"site {site['name']} is not inside plate 'data'"
    return frames[0]


def test_model_and_guide_sites_shapes_and_plate():
    vae = VAE(z_dim=Z, hidden_dims=(32,))
    x = binary_batch()
    guide_tr = poutine.trace(vae.guide).get_trace(x)
    model_tr = poutine.trace(poutine.replay(vae.model, trace=guide_tr)).get_trace(x)

    qz, pz, px = guide_tr.nodes["z"], model_tr.nodes["z"], model_tr.nodes["x"]
    for site in (qz, pz):
        assert site["fn"].event_shape == (Z,) and site["fn"].batch_shape == (B,)
        assert data_plate(site).dim == -1 and data_plate(site).size == B
    assert px["is_observed"] and torch.equal(px["value"], x)
    assert px["fn"].event_shape == (784,) and px["fn"].batch_shape == (B,)
    assert data_plate(px).size == B
    # the prior is N(0, I)
    assert torch.equal(pz["fn"].base_dist.loc, torch.zeros(B, Z))
    assert torch.equal(pz["fn"].base_dist.scale, torch.ones(B, Z))
    # the guide's sample is the model's z (replay), and it is reparameterized
    assert torch.equal(pz["value"], qz["value"]) and qz["fn"].has_rsample
    # decoder and encoder are registered with Pyro
    names = set(pyro.get_param_store().keys())
    assert {"vae.decoder$$$0.weight", "vae.guide$$$encoder.net.0.weight"} <= names
    latent = [
        n
        for n, s in model_tr.nodes.items()
        if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)
    ]
    assert latent == ["z"]


def test_image_shaped_input_equals_flat_input():
    vae = VAE(z_dim=Z, hidden_dims=(32,))
    x = binary_batch()
    torch.manual_seed(3)
    flat = elbo_terms(vae.model, vae.guide, x)
    torch.manual_seed(3)
    image = elbo_terms(vae.model, vae.guide, x.reshape(B, 1, 28, 28))
    assert torch.equal(flat.elbo, image.elbo)


def test_reported_elbo_equals_trace_log_probs_and_trace_elbo():
    """For fixed noise, the per-datapoint ELBO equals log p(x|z) + log p(z) - log q(z|x)
    read off the traces, and its sum is minus Pyro's Trace_ELBO loss."""
    vae = VAE(z_dim=Z, hidden_dims=(32,))
    x = binary_batch()

    torch.manual_seed(11)
    terms = elbo_terms(vae.model, vae.guide, x, analytic_kl=False)

    torch.manual_seed(11)
    guide_tr = poutine.trace(vae.guide).get_trace(x)
    model_tr = poutine.trace(poutine.replay(vae.model, trace=guide_tr)).get_trace(x)
    model_tr.compute_log_prob()
    guide_tr.compute_log_prob()
    expected = model_tr.nodes["x"]["log_prob"] + model_tr.nodes["z"]["log_prob"] - guide_tr.nodes["z"]["log_prob"]
    assert expected.shape == (B,)
    assert torch.allclose(terms.elbo, expected, atol=1e-4, rtol=0)
    assert torch.allclose(terms.recon, model_tr.nodes["x"]["log_prob"], atol=1e-4, rtol=0)

    torch.manual_seed(11)
    loss = Trace_ELBO().loss(vae.model, vae.guide, x)
    assert loss == pytest.approx(-float(expected.detach().sum()), abs=1e-3)


def test_analytic_kl_is_the_gaussian_closed_form():
    vae = VAE(z_dim=Z, hidden_dims=(32,))
    x = binary_batch()
    q = vae.posterior(x).base_dist
    loc, scale = q.loc, q.scale
    by_hand = 0.5 * (scale**2 + loc**2 - 1 - 2 * scale.log()).sum(-1)
    terms = elbo_terms(vae.model, vae.guide, x, analytic_kl=True)
    assert torch.allclose(terms.kl, by_hand, atol=1e-5)
    assert (terms.kl > 0).all()
    assert torch.allclose(terms.elbo, terms.recon - terms.kl)


def test_bits_per_dim_is_nats_over_pixels_ln2():
    vae = VAE(z_dim=Z, hidden_dims=(32,))
    terms = elbo_terms(vae.model, vae.guide, binary_batch())
    assert torch.allclose(terms.bits_per_dim(784), -terms.elbo / (784 * math.log(2)))


def test_num_data_scales_every_log_prob_by_n_over_b():
    vae = VAE(z_dim=Z, hidden_dims=(32,))
    x = binary_batch()
    n = 600

    def traces(**kwargs):
        torch.manual_seed(5)  # same noise for both runs: the plate draws no random indices
        guide_tr = poutine.trace(vae.guide).get_trace(x, **kwargs)
        model_tr = poutine.trace(poutine.replay(vae.model, trace=guide_tr)).get_trace(x, **kwargs)
        return guide_tr, model_tr

    guide_1, model_1 = traces()
    guide_n, model_n = traces(num_data=n)
    assert torch.equal(guide_1.nodes["z"]["value"], guide_n.nodes["z"]["value"])
    assert model_n.log_prob_sum().item() == pytest.approx(n / B * model_1.log_prob_sum().item(), rel=1e-5)
    assert guide_n.log_prob_sum().item() == pytest.approx(n / B * guide_1.log_prob_sum().item(), rel=1e-5)
    with pytest.raises(ValueError, match="smaller than the batch"):
        vae.model(x, num_data=B - 1)


def test_bernoulli_refuses_grey_pixels_with_a_fix():
    vae = VAE(z_dim=Z, hidden_dims=(32,))
    grey = torch.rand(B, 784)
    with pytest.raises(InvalidDataError, match="binarize.*continuous_bernoulli"):
        vae.model(grey)


def test_continuous_bernoulli_takes_grey_pixels_and_refuses_out_of_range():
    vae = VAE(z_dim=Z, hidden_dims=(32,), likelihood="continuous_bernoulli")
    grey = torch.rand(B, 784)
    terms = elbo_terms(vae.model, vae.guide, grey)
    assert torch.isfinite(terms.elbo).all()
    # a normalized density on [0, 1]: the log-density is not bounded by 0 as a pmf's is
    with pytest.raises(InvalidDataError, match=r"\[0, 1\]"):
        vae.model(grey * 2)


def test_bad_shapes_and_names_are_clear_errors():
    vae = VAE(z_dim=Z, hidden_dims=(32,))
    with pytest.raises(InvalidDataError, match=r"shape \(6, 100\).*784"):
        vae.model(torch.zeros(B, 100))
    with pytest.raises(InvalidDataError, match="dtype"):
        vae.model(torch.zeros(B, 784, dtype=torch.uint8))
    with pytest.raises(ValueError, match="unknown likelihood 'gauss'.*bernoulli"):
        VAE(likelihood="gauss")
    with pytest.raises(ValueError, match="z_dim must be a positive integer"):
        VAE(z_dim=0)
    with pytest.raises(ValueError, match="unknown guide 'gaussian'.*diagonal.*iaf"):
        VAE(guide="gaussian")
    with pytest.raises(TypeError, match="guide must be"):
        VAE(guide=42)


def test_a_user_guide_plugs_in_and_trains():
    calls = []
    encoder = torch.nn.Linear(784, 2 * Z)

    def my_guide(x, num_data=None):
        calls.append(x.shape[0])
        pyro.module("my_encoder", encoder)
        with pyro.plate("data", num_data or x.shape[0], subsample=torch.arange(x.shape[0])):
            loc, raw = encoder(x.reshape(x.shape[0], -1)).chunk(2, -1)
            pyro.sample("z", pyro.distributions.Normal(loc, torch.nn.functional.softplus(raw) + 1e-4).to_event(1))

    vae = VAE(z_dim=Z, hidden_dims=(32,), guide=my_guide)
    assert vae.encoder is None and vae.config["guide"] == "custom:my_guide"
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    before = encoder.weight.detach().clone()
    for _ in range(3):
        svi.step(binary_batch(), num_data=60)
    # the first call checks the guide contract on 2 rows, unscaled and scaled by num_data, once
    assert calls == [2, 2, B, B, B]
    assert not torch.equal(before, encoder.weight)


def test_two_vaes_in_one_process_keep_their_own_parameters():
    """Pyro's param store is global; training one VAE must never move another's weights."""
    first, second = VAE(z_dim=Z, hidden_dims=(16,)), VAE(z_dim=Z, hidden_dims=(16,))
    x = binary_batch()
    svi_first = SVI(first.model, first.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    svi_first.step(x)
    snapshot = {k: v.clone() for k, v in first.state_dict().items()}
    svi_second = SVI(second.model, second.guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    before_second = second.decoder[0].weight.detach().clone()
    svi_second.step(x)
    assert all(torch.equal(snapshot[k], v) for k, v in first.state_dict().items())
    assert not torch.equal(before_second, second.decoder[0].weight)
