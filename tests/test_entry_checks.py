"""The VAE's door: every path into the model and the guide checks the guide contract once
and the input always, as the README's raw ``SVI(vae.model, vae.guide, ...)`` uses them."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO, TraceGraph_ELBO

from pyro_vae import VAE, Trainer, data_plate, elbo_terms, log_likelihood
from pyro_vae.errors import ConfigError, InvalidDataError
from pyro_vae.inference.guide_contract import GuideError

Z = 8


def binary(b=16, seed=0):
    return torch.bernoulli(torch.full((b, 784), 0.3), generator=torch.Generator().manual_seed(seed))


class TutorialEncoder(torch.nn.Module):
    """The encoder of Pyro's VAE tutorial: its code is site "latent", not "z"."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(784, 2 * Z)

    def forward(self, x, num_data=None):
        pyro.module("encoder", self)
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = self.fc(x).chunk(2, -1)
            pyro.sample("latent", dist.Normal(loc, log_scale.exp()).to_event(1))


def three_dim_guide(x, num_data=None):
    loc = pyro.param("loc3", torch.zeros(3))
    with data_plate(x.shape[0], num_data, x.device):
        pyro.sample("z", dist.Normal(loc.expand(x.shape[0], 3), 1.0).to_event(1))  # the VAE has z_dim=8


def score_function_guide(x, num_data=None):
    probs = pyro.param("probs", torch.full((Z,), 0.5), constraint=dist.constraints.unit_interval)
    with data_plate(x.shape[0], num_data, x.device):
        pyro.sample("z", dist.Bernoulli(probs.expand(x.shape[0], Z)).to_event(1))  # no rsample


def svi_step(vae, x):
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    return svi.step(x, num_data=1000)


def trainer_step(vae, x):
    return Trainer(vae).step(x, num_data=1000)


def terms(vae, x):
    return elbo_terms(vae.model, vae.guide, x)


def loglik(vae, x):
    return log_likelihood(vae.model, vae.guide, x, num_samples=4)


PATHS = [svi_step, trainer_step, terms, loglik]
BROKEN = [
    (
        TutorialEncoder,
        r"^rule 1 \(site 'z'\): the guide has no latent sample site 'z' \(its latent sites: \['latent'\]\)",
    ),
    (lambda: three_dim_guide, r"^rule 3 \(event shape\): site 'z' has event shape \(3,\), expected \(8,\)"),
]


@pytest.mark.parametrize("path", PATHS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("make_guide, message", BROKEN, ids=["site-latent", "event-shape-3"])
def test_every_path_refuses_a_broken_guide_with_the_rule(path, make_guide, message):
    vae = VAE(z_dim=Z, hidden_dims=(32,), guide=make_guide())
    with pytest.raises(GuideError, match=message) as err:
        path(vae, binary())
    assert "\n" not in str(err.value) and len(str(err.value)) < 300
    assert not vae.guide_checked


def test_the_check_runs_once_and_draws_no_number_of_the_run():
    x = binary(32)
    states = []
    for pre_checked in (False, True):
        pyro.clear_param_store()
        pyro.set_rng_seed(1)
        vae = VAE(z_dim=Z, hidden_dims=(32,))
        if pre_checked:
            vae.check_guide(x)
        assert vae.guide_checked == pre_checked
        pyro.set_rng_seed(2)
        losses = [svi_step(vae, x) for _ in range(3)]
        assert vae.guide_checked
        states.append((losses, [p.detach().clone() for p in vae.parameters()]))
    (losses_lazy, params_lazy), (losses_pre, params_pre) = states
    assert losses_lazy == losses_pre
    assert all(torch.equal(a, b) for a, b in zip(params_lazy, params_pre))


def test_nan_pixel_through_raw_svi_is_named_in_one_short_line():
    x = binary()
    x[3, 100] = float("nan")
    x[5, 7] = float("nan")
    for call in (lambda vae: svi_step(vae, x), lambda vae: Trace_ELBO().loss(vae.model, vae.guide, x)):
        vae = VAE(z_dim=Z, hidden_dims=(32,))
        with pytest.raises(InvalidDataError) as err:
            call(vae)
        message = str(err.value)
        assert message == "x holds 2 NaN pixel values (in 2 of 16 images); clean or drop those images"
    # once the guide is checked, the model and guide still name the NaN, not the encoder's loc
    vae = VAE(z_dim=Z, hidden_dims=(32,))
    svi_step(vae, binary())
    with pytest.raises(InvalidDataError, match="^x holds 2 NaN pixel values"):
        svi_step(vae, x)


def test_infinite_and_out_of_support_pixels_through_raw_svi():
    x = binary()
    x[0, 0] = float("inf")
    with pytest.raises(InvalidDataError, match=r"^x holds 1 infinite pixel value \(in 1 of 16 images\)"):
        svi_step(VAE(z_dim=Z, hidden_dims=(32,)), x)
    grey = torch.rand(4, 784, generator=torch.Generator().manual_seed(0))
    with pytest.raises(InvalidDataError, match="'bernoulli' likelihood needs binary pixels"):
        svi_step(VAE(z_dim=Z, hidden_dims=(32,)), grey)


def test_float64_and_wrong_width_through_raw_svi_name_the_fix():
    vae = VAE(z_dim=Z, hidden_dims=(32,))
    with pytest.raises(InvalidDataError) as err:
        svi_step(vae, binary().double())
    assert str(err.value) == "x is float64 but the VAE's parameters are float32; pass x.float() or call vae.double()"
    with pytest.raises(InvalidDataError, match=r"^x has shape \(16, 783\)"):
        svi_step(vae, binary()[:, :783])
    with pytest.raises(InvalidDataError, match="^x is an empty batch"):
        svi_step(vae, binary()[:0])
    # the fix the message gives works: a float64 VAE trains on float64 data
    assert torch.isfinite(torch.tensor(svi_step(VAE(z_dim=Z, hidden_dims=(32,)).double(), binary().double())))


def test_float64_given_to_trainer_fit_blames_the_data_not_the_guide():
    with pytest.raises(InvalidDataError, match="^x is float64 but the VAE's parameters are float32"):
        Trainer(VAE(z_dim=Z, hidden_dims=(32,))).fit(binary().double(), None, epochs=1, progress=False)


def test_a_score_function_guide_is_refused_unless_the_vae_allows_it():
    with pytest.raises(GuideError, match=r"^rule 4 \(reparameterized\)"):
        svi_step(VAE(z_dim=Z, hidden_dims=(32,), guide=score_function_guide), binary())
    vae = VAE(z_dim=Z, hidden_dims=(32,), guide=score_function_guide, require_reparameterized=False)
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-2}), TraceGraph_ELBO())
    svi.step(binary(), num_data=1000)
    assert vae.guide_checked and not torch.equal(pyro.param("probs"), torch.full((Z,), 0.5))  # it trained
    with pytest.raises(ConfigError, match="require_reparameterized=False"):
        Trainer(vae)
