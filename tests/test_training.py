"""SVI training on real MNIST: the test ELBO rises; checkpoints resume exactly."""

import pyro
import pytest
import torch

from pyro_vae import HVAE, VAE, CheckpointError, InvalidDataError, Trainer, data_plate, load_model, log_likelihood
from pyro_vae.training.checkpoint import load_checkpoint


def test_svi_raises_the_test_elbo_on_real_mnist(mnist):
    train, test = mnist.train_images[:3000], mnist.test_images[:1000]
    vae = VAE(z_dim=20, hidden_dims=(200,))
    trainer = Trainer(vae, lr=1e-3, seed=0)
    test_ready = trainer.prepare_test(test)
    before = trainer.evaluate(test_ready)
    trainer.fit(train, test, epochs=10, batch_size=100, progress=False, log=lambda _: None)  # 300 steps
    after = trainer.evaluate(test_ready)
    # An untrained decoder scores about -545 nats (every pixel near p = 1/2: 784 ln 2);
    # 300 steps of SVI reach about -190 here.
    assert before["elbo"] < -500
    assert after["elbo"] > before["elbo"] + 250
    assert after["elbo"] > -215
    assert after["recon"] > before["recon"] and after["kl"] > 0
    assert after["elbo"] == pytest.approx(after["recon"] - after["kl"])
    assert len(trainer.history) == 10 and all("test_elbo" in r for r in trainer.history)


def _params(vae):
    return {k: v.detach().clone() for k, v in vae.state_dict().items()}


def test_resume_continues_bit_identically(mnist, tmp_path):
    train, test = mnist.train_images[:600], mnist.test_images[:200]

    def make():
        pyro.set_rng_seed(7)  # the seed governs the initial weights too
        return Trainer(VAE(z_dim=5, hidden_dims=(32,)), seed=7)

    quiet = dict(batch_size=64, progress=False, log=lambda _: None)

    straight = make()
    straight.fit(train, test, epochs=2, **quiet)

    first = make()
    first.fit(train, test, epochs=1, checkpoint=str(tmp_path / "ck.pt"), **quiet)
    resumed = make()
    resumed.resume(str(tmp_path / "ck.pt"))
    assert resumed.epoch == 1
    resumed.fit(train, test, epochs=2, **quiet)

    a, b = _params(straight.vae), _params(resumed.vae)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["train_elbo"] for r in straight.history] == [r["train_elbo"] for r in resumed.history]
    assert straight.history[-1]["test_elbo"] == resumed.history[-1]["test_elbo"]


def test_checkpoint_from_another_config_says_what_differs(mnist, tmp_path):
    trainer = Trainer(VAE(z_dim=5, hidden_dims=(32,)))
    trainer.save(str(tmp_path / "ck.pt"))
    other = Trainer(VAE(z_dim=6, hidden_dims=(32,)))
    with pytest.raises(CheckpointError, match="z_dim: checkpoint 5 vs now 6"):
        other.resume(str(tmp_path / "ck.pt"))
    state = load_checkpoint(tmp_path / "ck.pt")
    assert state["version"] == 3 and state["config"]["z_dim"] == 5


def test_corrupt_checkpoints_are_refused(tmp_path):
    trainer = Trainer(VAE(z_dim=5, hidden_dims=(32,)))
    path = tmp_path / "ck.pt"
    trainer.save(str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        trainer.resume(str(path))
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not a pyro_vae checkpoint"):
        trainer.resume(str(path))
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        trainer.resume(str(tmp_path / "missing.pt"))


def test_grey_pixels_without_binarization_are_refused_up_front(mnist):
    trainer = Trainer(VAE(z_dim=5, hidden_dims=(32,)), binarize="none")
    with pytest.raises(InvalidDataError, match="binarize"):
        trainer.fit(mnist.train_images[:64], None, epochs=1, progress=False, log=lambda _: None)


@pytest.mark.parametrize("kwargs, match", [({"lr": 0}, "lr must be"), ({"binarize": "otsu"}, "unknown binarization")])
def test_bad_trainer_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Trainer(VAE(z_dim=5, hidden_dims=(32,)), **kwargs)


def test_the_fast_training_step_computes_the_hand_written_negative_elbo(mnist):
    """Trainer.step's loss (mean-field objective) is -ELBO of the batch at the N/B scale,
    exactly as plain PyTorch writes it with the same noise: encoder, z = loc + scale * eps,
    Bernoulli log-likelihood, KL to N(0, I) in closed form."""
    x = (mnist.train_images[:64] > 0.5).float()
    trainer = Trainer(VAE(z_dim=6, hidden_dims=(32,)), objective="meanfield")
    torch.manual_seed(5)
    with torch.no_grad():  # before the step changes the weights
        loc, scale = trainer.vae.encoder.encoder(x)
        z = loc + scale * torch.randn_like(loc)
        recon = -torch.nn.functional.binary_cross_entropy_with_logits(trainer.vae.decoder(z), x, reduction="sum")
        kl = 0.5 * (loc.pow(2) + scale.pow(2) - 1).sum() - scale.log().sum()
        expected = float(-(recon - kl) * 1000 / 64)
    torch.manual_seed(5)
    assert trainer.step(x, num_data=1000) == pytest.approx(expected, rel=1e-5)


def test_per_step_validation_changes_nothing_but_the_checks(mnist):
    """validate=True (Pyro's and torch's validation at every step) and the default train bit-identically."""
    x = mnist.train_images[:256]
    trained = []
    for validate in (False, True):
        pyro.set_rng_seed(11)
        trainer = Trainer(VAE(z_dim=5, hidden_dims=(32,)), seed=11, validate=validate)
        trainer.train_epoch(trainer.check_data(x, "x"), batch_size=64)
        trained.append(trainer.vae.state_dict())
    for name, value in trained[0].items():
        assert torch.equal(value, trained[1][name]), name


def test_a_guide_keeping_its_parameters_in_the_param_store_resumes_bit_identically(mnist, tmp_path):
    """The docs' pattern: a function guide with an encoder outside the VAE (pyro.module) and a
    constrained pyro.param. Checkpoints save both by name; a resumed run, as in a new process
    (empty param store, a freshly initialized encoder), continues exactly."""
    train, test = mnist.train_images[:600], mnist.test_images[:200]
    quiet = dict(batch_size=64, progress=False, log=lambda _: None)

    def make(encoder_seed, with_floor=True):
        pyro.clear_param_store()
        encoder = torch.nn.Linear(784, 2 * 5)
        generator = torch.Generator().manual_seed(encoder_seed)
        torch.nn.init.normal_(encoder.weight, std=0.01, generator=generator)
        torch.nn.init.normal_(encoder.bias, std=0.01, generator=generator)

        def guide(x, num_data=None):
            pyro.module("outside_encoder", encoder)
            floor = 0.01
            if with_floor:
                floor = pyro.param(
                    "scale_floor", torch.tensor(0.01), constraint=pyro.distributions.constraints.positive
                )
            loc, raw = encoder(x).chunk(2, -1)
            with data_plate(x.shape[0], num_data, x.device):
                pyro.sample("z", pyro.distributions.Normal(loc, torch.nn.functional.softplus(raw) + floor).to_event(1))

        pyro.set_rng_seed(7)
        return Trainer(VAE(z_dim=5, hidden_dims=(32,), guide=guide), seed=7), encoder

    straight, straight_encoder = make(encoder_seed=1)
    straight.fit(train, test, epochs=2, **quiet)
    final_floor = pyro.param("scale_floor").item()

    first, _ = make(encoder_seed=1)
    first.fit(train, test, epochs=1, checkpoint=str(tmp_path / "ck.pt"), **quiet)
    state = torch.load(tmp_path / "ck.pt", weights_only=True)
    assert set(state["param_store"]["params"]) == {"outside_encoder$$$weight", "outside_encoder$$$bias", "scale_floor"}

    resumed, resumed_encoder = make(encoder_seed=2)  # another init: the checkpoint must overwrite it
    resumed.resume(str(tmp_path / "ck.pt"))
    resumed.fit(train, test, epochs=2, **quiet)

    a, b = _params(straight.vae), _params(resumed.vae)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(straight_encoder.weight, resumed_encoder.weight)
    assert torch.equal(straight_encoder.bias, resumed_encoder.bias)
    assert pyro.param("scale_floor").item() == final_floor
    assert [r["train_elbo"] for r in straight.history] == [r["train_elbo"] for r in resumed.history]

    other, _ = make(encoder_seed=1, with_floor=False)  # a guide with other parameters cannot take it
    other.resume(str(tmp_path / "ck.pt"))
    with pytest.raises(
        CheckpointError,
        match=r"holds the param-store parameters .*'scale_floor'\], but this model and "
        r"guide have \['outside_encoder\$\$\$bias', 'outside_encoder\$\$\$weight'\]",
    ):
        other.fit(train, test, epochs=2, **quiet)


@pytest.mark.parametrize(
    "make",
    [
        lambda: VAE(z_dim=3, hidden_dims=(16,), prior="vamp", num_pseudo_inputs=10),
        lambda: HVAE(z_dims=(4, 2), hidden_dims=((16,), (8,)), prior="vamp", num_pseudo_inputs=10),
    ],
)
def test_load_model_rebuilds_a_library_model_with_its_weights(make, tmp_path):
    pyro.set_rng_seed(0)
    vae = make()
    Trainer(vae).save(str(tmp_path / "ck.pt"))
    pyro.set_rng_seed(1)  # other initial weights: only the checkpoint's can make the estimates agree
    loaded = load_model(tmp_path / "ck.pt")
    assert type(loaded) is type(vae) and loaded.config == vae.config and not loaded.training
    x = (torch.rand(3, 784) < 0.3).float()
    estimates = []
    for model in (vae, loaded):
        torch.manual_seed(2)
        estimates.append(log_likelihood(model.model, model.guide, x, num_samples=20).log_likelihood)
    assert torch.equal(estimates[0], estimates[1])


def test_load_model_refuses_a_users_own_program(tmp_path):
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", pyro.distributions.Normal(0.0, 1.0))
            pyro.sample("x", pyro.distributions.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", pyro.distributions.Normal(0.0, 1.0))

    Trainer(model, guide).save(str(tmp_path / "ck.pt"))
    with pytest.raises(CheckpointError, match="not one of pyro_vae's models.*load_checkpoint"):
        load_model(tmp_path / "ck.pt")
