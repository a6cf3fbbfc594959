"""The likelihoods p(x|z) beyond binary pixels (pyro_vae.models.likelihoods): each log-density
against torch.distributions with the parameters written out, the discretized logistic against an
enumeration of its 256 values, the support checks, and a VAE trained with each through the Trainer."""

import math

import pytest
import torch
from torch.distributions import Categorical, Laplace, NegativeBinomial, Normal, Poisson, StudentT
from torch.nn import functional as F

from pyro_vae import VAE
from pyro_vae.errors import InvalidDataError
from pyro_vae.models.discretized_logistic import DiscretizedLogistic
from pyro_vae.models.likelihoods import LIKELIHOODS, get_likelihood
from pyro_vae.training import Trainer


def softplus_scale(raw):
    return F.softplus(raw) + 1e-3


@pytest.mark.parametrize(
    "name",
    ["normal", "normal_heteroscedastic", "laplace", "student_t", "poisson", "negative_binomial", "categorical:3"],
)
def test_log_density_is_the_torch_distributions_one_with_its_parameters_written_out(name):
    torch.manual_seed(0)
    x_dim, batch = 5, 4
    likelihood = get_likelihood(name, x_dim)
    with torch.no_grad():
        for p in likelihood.parameters():  # away from their initial values: each must be read
            p.add_(torch.randn_like(p))
    out = torch.randn(batch, x_dim * likelihood.params_per_feature)
    if name in ("poisson", "negative_binomial"):
        x = torch.poisson(torch.full((batch, x_dim), 3.0))
    elif name == "categorical:3":
        x = torch.randint(0, 3, (batch, x_dim)).float()
    else:
        x = torch.randn(batch, x_dim)
    by_hand = (
        {
            "normal": lambda: Normal(out, softplus_scale(likelihood.raw_scale)),
            "normal_heteroscedastic": lambda: Normal(out[:, :x_dim], softplus_scale(out[:, x_dim:])),
            "laplace": lambda: Laplace(out, softplus_scale(likelihood.raw_scale)),
            "student_t": lambda: StudentT(1 + F.softplus(likelihood.raw_df), out, softplus_scale(likelihood.raw_scale)),
            "poisson": lambda: Poisson(F.softplus(out) + 1e-6),
            "negative_binomial": lambda: NegativeBinomial(softplus_scale(likelihood.raw_total_count), logits=out),
            # K logits per feature: out holds the first category's logit of every feature, then the second's, ...
            "categorical:3": lambda: Categorical(logits=out.reshape(batch, 3, x_dim).transpose(1, 2)),
        }[name]()
        .log_prob(x)
        .sum(-1)
    )
    got = likelihood(out).log_prob(x)
    assert got.shape == (batch,) and torch.allclose(got, by_hand, atol=1e-5), (got, by_hand)
    assert likelihood.discrete == (name in ("poisson", "negative_binomial", "categorical:3"))


def test_the_discretized_logistic_is_a_distribution_over_the_256_grey_levels():
    """Its masses over the 256 values sum to 1 for every pixel (an enumeration against a sum),
    each is the logistic's CDF difference over its bin computed naively in float64, its mean is
    the sum of value times mass, and its samples fall in the bins with those frequencies."""
    torch.manual_seed(0)
    loc = torch.tensor([[0.0, 0.3, 0.5, 0.98, 1.2]], dtype=torch.float64)
    scale = torch.tensor([[0.05, 0.01, 0.2, 0.003, 0.1]], dtype=torch.float64)
    d = DiscretizedLogistic(loc, scale)
    values = torch.arange(256, dtype=torch.float64) / 255
    # each pixel scored alone at every value: a [256, 5] table of masses
    masses = torch.stack(
        [DiscretizedLogistic(loc[0, i : i + 1], scale[0, i : i + 1]).log_prob(values[:, None]).exp() for i in range(5)],
        -1,
    )
    assert torch.allclose(masses.sum(0), torch.ones(5, dtype=torch.float64), atol=1e-9), masses.sum(0)
    edges = torch.cat([torch.tensor([-math.inf]), (values[1:] + values[:-1]) / 2, torch.tensor([math.inf])])
    cdf = torch.sigmoid((edges[:, None].double() - loc[0]) / scale[0])
    assert torch.allclose(masses, cdf[1:] - cdf[:-1], atol=1e-9)
    assert torch.allclose(d.mean[0], (masses * values[:, None]).sum(0), atol=1e-9)
    draws = d.sample((20000,))[:, 0]  # [20000, 5]
    assert torch.equal(draws, (draws * 255).round() / 255)
    for i in range(5):
        counts = torch.bincount((draws[:, i] * 255).round().long(), minlength=256).double()
        expected = masses[:, i] * 20000
        mask = expected > 30
        z = (counts[mask] - expected[mask]) / expected[mask].sqrt()
        assert z.abs().max() < 5, (i, z.abs().max())
    # the joint over pixels is the product of the pixels' masses
    x = values[torch.tensor([0, 77, 128, 250, 255])][None]
    assert torch.allclose(d.log_prob(x), sum(masses[[0, 77, 128, 250, 255][i], i].log() for i in range(5)))


@pytest.mark.parametrize(
    "name, x, words",
    [
        ("normal", torch.tensor([[0.0, float("nan")]]), "needs finite real values"),
        ("poisson", torch.tensor([[1.0, -1.0]]), "needs counts, whole numbers >= 0"),
        ("negative_binomial", torch.tensor([[1.0, 2.5]]), "needs counts, whole numbers >= 0"),
        ("discretized_logistic", torch.tensor([[0.5, 0.6]]), "needs 8-bit grey levels k/255 in [0, 1]"),
        ("categorical:3", torch.tensor([[0.0, 3.0]]), "needs categories, whole numbers 0 to 2"),
    ],
)
def test_data_outside_the_support_is_refused_in_one_line(name, x, words):
    with pytest.raises(InvalidDataError) as info:
        get_likelihood(name, 2).check_support(x)
    assert words in str(info.value) and "\n" not in str(info.value)


def _data(name, n, seed=0):
    """Data each likelihood fits: a 2-dimensional latent mapped into 12 features (one map; ``seed``
    draws the datapoints)."""
    weights = torch.randn(2, 12, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(seed + 1)
    z = torch.randn(n, 2, generator=g)
    features = torch.tanh(z @ weights)
    if name in ("poisson", "negative_binomial"):
        return torch.poisson(3 * (features + 1), generator=g)
    if name == "discretized_logistic":
        return ((features + 1) / 2 * 255).round() / 255
    if name.startswith("categorical"):
        return torch.bucketize(features, torch.tensor([-0.3, 0.3])).float()  # 3 categories
    return features + 0.1 * torch.randn(n, 12, generator=g)


@pytest.mark.parametrize(
    "name", [*(n for n in LIKELIHOODS if n not in ("bernoulli", "continuous_bernoulli")), "categorical:3"]
)
def test_a_vae_learns_each_likelihood_through_the_trainer(name):
    """Twenty epochs on 600 datapoints of 12 features: the held-out ELBO rises; bits/dim only where the
    data are discrete; the likelihood's own parameters are trained and checkpointed with the decoder."""
    torch.manual_seed(0)
    vae = VAE(x_dim=12, z_dim=2, hidden_dims=(32,), likelihood=name)
    trainer = Trainer(vae, lr=1e-2)
    history = trainer.fit(
        _data(name, 600), _data(name, 200, seed=1), epochs=20, batch_size=50, progress=False, log=None
    )
    print(name, [round(r["test_elbo"], 2) for r in history[::4]])
    assert history[-1]["test_elbo"] > history[0]["test_elbo"] + 1, [r["test_elbo"] for r in history]
    assert ("test_bits_per_dim" in history[-1]) == vae.likelihood.discrete
    own = dict(vae.likelihood.named_parameters())
    assert set(own) == {k.split(".", 1)[1] for k in trainer.state_dict()["model"] if k.startswith("likelihood.")}
    assert vae.decoder[-1].out_features == 12 * vae.likelihood.params_per_feature


def test_a_normal_density_on_precise_data_gives_a_positive_elbo():
    """A density is not a probability: features known to 0.01 have log-densities above 0, and so
    can the ELBO -- which is why no bits/dim is reported for them."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(2)
    x = torch.tanh(torch.randn(800, 2, generator=g) @ torch.randn(2, 12, generator=g))
    x = x + 0.01 * torch.randn(800, 12, generator=g)
    vae = VAE(x_dim=12, z_dim=2, hidden_dims=(64,), likelihood="normal")
    history = Trainer(vae, lr=1e-2).fit(x[:600], x[600:], epochs=40, batch_size=50, progress=False, log=None)
    print("normal, features to 0.01:", [round(r["test_elbo"], 2) for r in history[::5]])
    assert history[-1]["test_elbo"] > 0, history[-1]["test_elbo"]
