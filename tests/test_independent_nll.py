"""bench/independent_nll.py's paired check, small: pyro_vae's importance-sampled log p(x) and an
independent float64 computation (plain torch.distributions, the VampPrior's mixture summed one
component at a time) agree to float32 rounding when both see the same noise."""

import pyro
import pytest
import torch
from conftest import import_from

from pyro_vae.models.registry import build_model

independent_nll = import_from("bench", "independent_nll")


@pytest.mark.parametrize("prior", ["standard", "vamp"])
def test_the_same_noise_gives_the_same_estimate_to_float32_rounding(mnist, prior):
    pyro.clear_param_store()
    torch.manual_seed(0)
    config = {"x_dim": 784, "z_dim": 5, "hidden_dims": [16, 16], "likelihood": "bernoulli", "prior": prior}
    if prior == "vamp":
        config["num_pseudo_inputs"] = 7
    vae = build_model(config)
    vae.eval()
    weights = {k: v.double() for k, v in vae.state_dict().items()}
    x = (mnist.test_images[:3] > 0.5).float()
    independent, ours = independent_nll.paired(weights, vae, x, num_samples=200)
    assert independent.shape == ours.shape == (3,)
    # an untrained model: log p(x) of hundreds of nats, so float32 rounding is about 1e-4 of a nat
    assert (independent - ours).abs().max() < 1e-3, (independent, ours)
    # and with other noise the two differ by the Monte Carlo error: the pairing is what agrees
    torch.manual_seed(123)
    unpaired = independent_nll.independent_log_likelihood(weights, x.double(), 200)
    assert (unpaired - ours).abs().max() > 1e-2
