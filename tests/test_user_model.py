"""A Pyro user's own model and guide through the Trainer: the numbers against closed forms and sums,
every data form, checkpoints and exact resume, and the checks that name the user's own call."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from conftest import StopAt
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from pyro_vae import VAE, elbo_terms
from pyro_vae.errors import ConfigError, InvalidDataError, NonFiniteError, TrainingInterrupted
from pyro_vae.inference.guide_contract import GuideError
from pyro_vae.models.linear_gaussian import LinearGaussianGuide, LinearGaussianModel
from pyro_vae.training import Callback, TrainConfig, Trainer

quiet = dict(progress=False, log=None)
D, Z, C = 13, 2, 3  # features, latent size, classes of the covariate


class TabularVAE(nn.Module):
    """What a Pyro user writes: a Gaussian decoder on standardized features given a one-hot
    covariate c, sites "z" and "x", plate "data" built from num_data; the guide an encoder."""

    def __init__(self) -> None:
        super().__init__()
        self.decoder = nn.Sequential(nn.Linear(Z + C, 32), nn.Tanh(), nn.Linear(32, 2 * D))
        self.encoder = nn.Sequential(nn.Linear(D + C, 32), nn.Tanh(), nn.Linear(32, 2 * Z))

    def model(self, x, c, num_data=None):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", num_data or len(x), subsample=torch.arange(len(x))):
            z = pyro.sample("z", dist.Normal(x.new_zeros(len(x), Z), 1.0).to_event(1))
            loc, log_scale = self.decoder(torch.cat([z, c], -1)).chunk(2, -1)
            pyro.sample("x", dist.Normal(loc, log_scale.exp()).to_event(1), obs=x)

    def guide(self, x, c, num_data=None):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", num_data or len(x), subsample=torch.arange(len(x))):
            loc, log_scale = self.encoder(torch.cat([x, c], -1)).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))


def tabular(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = nn.functional.one_hot(torch.randint(C, (n,), generator=g), C).float()
    z = torch.randn(n, Z, generator=g)
    mix = torch.randn(Z + C, D, generator=g)
    x = torch.tanh(torch.cat([z, c], -1) @ mix) + 0.1 * torch.randn(n, D, generator=g)
    return (x - x.mean(0)) / x.std(0), c


def new_tabular_trainer(seed=3, **settings):
    pyro.clear_param_store()
    torch.manual_seed(seed)
    net = TabularVAE()
    return Trainer(net.model, net.guide, seed=seed, **settings), net


def weights(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def ppca_problem():
    """Probabilistic PCA with orthogonal loadings, whose exact posterior is diagonal and so in the
    family of LinearGaussianGuide; 3000 training and 4000 held-out points; a fresh guide."""
    pyro.clear_param_store()
    g = torch.Generator().manual_seed(0)
    W = torch.linalg.qr(torch.randn(5, 2, generator=g))[0] * torch.tensor([2.0, 1.0])
    lg = LinearGaussianModel(W, torch.randn(5, generator=g), 0.5)
    torch.manual_seed(0)
    return lg, lg.sample(3000, 1), lg.sample(4000, 2), LinearGaussianGuide(5, 2)


def test_linear_gaussian_user_model_and_guide_reach_the_exact_evidence():
    """Probabilistic PCA with orthogonal loadings: the exact posterior is diagonal, in the guide's
    family, so the trained ELBO must reach log p(x), known in closed form; and the Trainer's
    held-out ELBO must agree with the closed-form ELBO of the guide it trained."""
    lg, train, test, guide = ppca_problem()
    trainer = Trainer(lg.model, guide, lr=0.01, seed=0)
    history = trainer.fit(train, test, epochs=15, batch_size=100, **quiet)
    with torch.no_grad():
        closed_form = lg.analytic_elbo(test, *guide.loc_scale_tril(test))
        evidence = lg.log_evidence(test).mean().item()
        one_sample = elbo_terms(lg.model, guide, test).elbo  # what the Trainer estimates, per point
    assert 0 <= evidence - closed_form.mean().item() < 0.01  # the bound is tight: q is the exact posterior
    # The Trainer's held-out ELBO (exact KL, a one-sample reconstruction) within 4 standard errors.
    stderr = (one_sample - closed_form).std().item() / math.sqrt(len(test))
    assert history[-1]["test_elbo"] == pytest.approx(closed_form.mean().item(), abs=4 * stderr)
    assert "test_bits_per_dim" not in history[-1]  # not a model of pixels
    assert history[-1]["test_elbo"] > history[0]["test_elbo"]


def test_trace_enum_elbo_trains_a_mixture_and_its_loss_is_the_enumerated_sum():
    """A Gaussian mixture with the assignment enumerated in the model (TraceEnum_ELBO) and an
    empty guide: the loss the Trainer reports is -sum_i log sum_k pi_k N(x_i; mu_k, 1),
    checked against that sum by hand, and training raises it."""
    pyro.clear_param_store()
    g = torch.Generator().manual_seed(1)
    x = torch.cat([torch.randn(60, generator=g) - 3, torch.randn(40, generator=g) + 2])

    def model(x, num_data=None):
        weights = pyro.param("weights", torch.ones(2) / 2, constraint=dist.constraints.simplex)
        locs = pyro.param("locs", torch.tensor([-1.0, 1.0]))
        with pyro.plate("data", num_data or len(x), subsample=torch.arange(len(x))):
            k = pyro.sample("k", dist.Categorical(weights), infer={"enumerate": "parallel"})
            pyro.sample("x", dist.Normal(locs[k], 1.0), obs=x)

    def guide(x, num_data=None):
        pass

    def by_hand():
        w, mu = pyro.param("weights").detach(), pyro.param("locs").detach()
        return -torch.logsumexp(w.log() + dist.Normal(mu, 1.0).log_prob(x[:, None]), -1).sum().item()

    trainer = Trainer(model, guide, objective=TraceEnum_ELBO(max_plate_nesting=1), lr=0.05)
    assert trainer.optimizer is None  # no module: every parameter lives in the param store
    trainer.fit(x, None, epochs=1, batch_size=len(x), **quiet)  # creates the params
    start = by_hand()
    trainer.fit(x, None, epochs=80, batch_size=len(x), **quiet)
    expected = by_hand()
    assert expected < start - 20
    assert trainer.step(x, num_data=len(x)) == pytest.approx(expected, rel=1e-6)  # loss before its update
    assert sorted(pyro.param("locs").tolist()) == pytest.approx([-3, 2], abs=0.5)


def test_a_user_model_stopped_mid_epoch_resumes_bit_identically(tmp_path):
    """Modules owned by model and guide, (x, c) arguments, a signal in epoch 2: the checkpoint's
    continuation repeats the straight run to the bit, weights, Adam's state and history."""
    x, c = tabular(500)
    test = tabular(200, seed=1)
    straight, straight_net = new_tabular_trainer()
    straight.fit((x, c), test, epochs=3, batch_size=64, **quiet)

    first, _ = new_tabular_trainer()
    path = str(tmp_path / "ck.pt")
    with pytest.raises(TrainingInterrupted) as stop:
        first.fit((x, c), test, epochs=3, batch_size=64, checkpoint=path, callbacks=[StopAt(2, 3)], **quiet)
    assert (stop.value.epoch, stop.value.step, stop.value.checkpoint) == (2, 4, path)

    resumed, resumed_net = new_tabular_trainer(seed=3)
    for p in resumed_net.parameters():  # another start: the checkpoint must overwrite it
        nn.init.normal_(p)
    resumed.resume(path)
    assert (resumed.epoch, resumed.step_in_epoch) == (1, 4)
    resumed.fit((x, c), test, epochs=3, batch_size=64, **quiet)
    a, b = weights(straight_net), weights(resumed_net)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert straight.history == [dict(r, seconds=s["seconds"]) for r, s in zip(resumed.history, straight.history)]
    assert straight.history[-1]["test_elbo"] > straight.history[0]["test_elbo"]  # it learns


def test_every_data_form_trains_the_same_run():
    """A tuple of tensors, a dict of them (keyword arguments), a TensorDataset, a Dataset of
    dicts and a DataLoader are one data set: the same seed gives the same weights to the bit."""
    x, c = tabular(300)

    class Rows(Dataset):
        def __len__(self):
            return len(x)

        def __getitem__(self, i):
            return {"x": x[i], "c": c[i]}

    forms = {
        "tuple": (x, c),
        "dict": {"x": x, "c": c},
        "dataset": TensorDataset(x, c),
        "dict items": Rows(),
        "loader": DataLoader(TensorDataset(x, c), batch_size=7, shuffle=True),
    }
    results = {}
    for name, data in forms.items():
        trainer, net = new_tabular_trainer()
        history = trainer.fit(data, data, epochs=2, batch_size=50, **quiet)
        results[name] = (weights(net), [(r["train_elbo"], r["test_elbo"]) for r in history])
    reference, ref_history = results.pop("tuple")
    for name, (found, history) in results.items():
        assert all(torch.equal(reference[k], found[k]) for k in reference), name
        assert history == ref_history, name


def test_a_model_of_pyro_params_only_checkpoints_its_param_store(tmp_path):
    """Plain functions, every parameter a pyro.param: saved by name with its Adam state, restored
    into a fresh param store, the continuation equal to the straight run."""
    x = torch.randn(200, 3) * 2 + 1

    def model(x, num_data=None):
        loc = pyro.param("loc", torch.zeros(3))
        with pyro.plate("data", num_data or len(x), subsample=torch.arange(len(x))):
            z = pyro.sample("z", dist.Normal(loc, 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)

    def guide(x, num_data=None):
        weight, bias = pyro.param("weight", torch.zeros(3)), pyro.param("bias", torch.zeros(3))
        scale = pyro.param("scale", torch.ones(3), constraint=dist.constraints.positive)
        with pyro.plate("data", num_data or len(x), subsample=torch.arange(len(x))):
            pyro.sample("z", dist.Normal(weight * x + bias, scale).to_event(1))

    def run(epochs, resume=None, checkpoint=None):
        pyro.clear_param_store()
        trainer = Trainer(model, guide, lr=0.05, seed=1)
        if resume:
            trainer.resume(resume)
        trainer.fit(x, None, epochs=epochs, batch_size=32, checkpoint=checkpoint, **quiet)
        return {k: v.detach().clone() for k, v in pyro.get_param_store().items()}, trainer

    straight, _ = run(40)
    path = str(tmp_path / "ck.pt")
    run(20, checkpoint=path)
    resumed, trainer = run(40, resume=path)
    assert straight.keys() == resumed.keys() == {"loc", "weight", "bias", "scale"}
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    # This conjugate model in closed form: x ~ N(loc, 2), so loc -> the data mean; the exact
    # posterior is z | x ~ N((x + loc) / 2, 1/2), which the guide can be.
    assert straight["loc"] == pytest.approx(x.mean(0), abs=0.25)
    assert straight["weight"] == pytest.approx(torch.full((3,), 0.5), abs=0.1)
    assert straight["scale"] == pytest.approx(torch.full((3,), 0.5**0.5), abs=0.1)


def tutorial_guide(encoder):
    """A guide as Pyro's VAE tutorial writes one: its plate from the batch, num_data ignored."""

    def guide(x, num_data=None):
        pyro.module("tutorial_encoder", encoder)
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = encoder(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    return guide


def test_the_guide_contract_judges_the_call_that_is_made():
    """The tutorial's guide is right for svi.step(x), the README's raw-SVI call without num_data,
    and refused, in words about that call, when a minibatch is scaled to a larger data set."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    x = torch.bernoulli(torch.rand(32, 784))
    vae = VAE(z_dim=4, hidden_dims=(16,), guide=tutorial_guide(nn.Linear(784, 8)))
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
    assert math.isfinite(svi.step(x))  # no minibatch scaled: the guide is right
    assert math.isfinite(svi.step(x, num_data=32))  # num_data equal to the batch: still nothing scaled
    with pytest.raises(
        GuideError,
        match=r"rule 2 \(plate 'data'\): called as guide\(x, num_data=1000\) on a "
        r"minibatch of 32, the guide's plate 'data' has full size 2 but the "
        r"model's has 1000",
    ):
        svi.step(x, num_data=1000)
    # Every Trainer run over minibatches scales them: refused before the first step.
    vae = VAE(z_dim=4, hidden_dims=(16,), guide=tutorial_guide(nn.Linear(784, 8)))
    with pytest.raises(GuideError, match=r"called as guide\(x, num_data=64\) on a minibatch of 16"):
        Trainer(vae).fit(torch.rand(64, 784), None, epochs=1, batch_size=16, **quiet)
    # ... and on the whole data set at once the same guide trains.
    vae = VAE(z_dim=4, hidden_dims=(16,), guide=tutorial_guide(nn.Linear(784, 8)))
    assert len(Trainer(vae).fit(torch.rand(64, 784), None, epochs=1, batch_size=64, **quiet)) == 1


def test_a_user_guide_that_ignores_num_data_is_refused_in_words_about_the_trainers_call():
    net = TabularVAE()

    def guide(x, c, num_data=None):  # the plate from the batch: log q not scaled by N/B
        pyro.module("encoder", net.encoder)
        with pyro.plate("data", len(x)):
            loc, log_scale = net.encoder(torch.cat([x, c], -1)).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    with pytest.raises(
        GuideError,
        match=r"the Trainer called the guide with num_data=300 on a minibatch of 100: at "
        r"site 'z' the guide's plate 'data' has full size 2 but the model's has 300",
    ):
        Trainer(net.model, guide).fit(tabular(300), None, epochs=1, batch_size=100, **quiet)


def test_a_model_without_num_data_trains_on_the_full_batch_and_is_refused_minibatches():
    lg = LinearGaussianModel(torch.randn(4, 2), torch.zeros(4), 1.0)
    x = lg.sample(100, 0)

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(torch.zeros(len(x), 2), 1.0).to_event(1))
            pyro.sample("x", lg.likelihood(z), obs=x)

    guide = LinearGaussianGuide(4, 2)
    with pytest.raises(
        ConfigError,
        match=r"the model takes no num_data argument, so a minibatch of your 100 "
        r"datapoints cannot be scaled by N/B",
    ) as err:
        Trainer(model, guide).fit(x, None, epochs=1, batch_size=10, **quiet)
    assert err.value.settings == ("batch_size",)
    history = Trainer(model, guide, lr=0.05).fit(x, x, epochs=20, batch_size=100, **quiet)
    assert history[-1]["test_elbo"] > history[0]["test_elbo"]


def test_a_non_finite_gradient_in_a_user_model_stops_before_the_update():
    trainer, net = new_tabular_trainer()
    before = weights(net)
    net.decoder[0].weight.register_hook(lambda grad: grad * float("nan"))
    with pytest.raises(
        NonFiniteError,
        match=r"training stopped at epoch 1, step 0: the loss is finite .* but its "
        r"gradient norm is not.* the reconstruction term",
    ):
        trainer.fit(tabular(100), None, epochs=1, batch_size=50, **quiet)
    after = weights(net)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_nan_in_a_users_data_is_refused_in_one_line_about_values_and_rows():
    x, c = tabular(100)
    x[3, 5], x[7, 0] = float("nan"), float("inf")
    trainer, _ = new_tabular_trainer()
    with pytest.raises(
        InvalidDataError,
        match=r"^the training data holds 1 NaN and 1 infinite values \(in 2 of 100 "
        r"rows\); clean or drop those rows$",
    ):
        trainer.fit((x, c), None, epochs=1, batch_size=50, **quiet)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: Trainer(lambda x: None), r"Trainer\(model, guide\) needs a guide"),
        (
            lambda: Trainer((lambda x: None, lambda x: None)),
            r"^pass the model and the guide as two arguments, "
            r"Trainer\(model, guide\), not as one tuple$",
        ),
        (lambda: Trainer(lambda x: None, "guide"), r"the guide must be callable"),
        (lambda: Trainer(VAE(z_dim=2, hidden_dims=(8,)), TrainConfig()), r"pass the settings as Trainer\(vae, config="),
    ],
)
def test_a_trainer_built_wrongly_says_how_to_build_it(call, match):
    with pytest.raises(ConfigError, match=match):
        call()


def test_trainer_of_a_vaes_own_model_and_guide_is_the_vaes_trainer():
    vae = VAE(z_dim=2, hidden_dims=(8,))
    assert Trainer(vae.model, vae.guide).vae is vae
    assert Trainer(vae.model, vae.guide).config.binarize == "dynamic"  # the Bernoulli VAE's natural one


class ScriptedScore(Callback):
    """Puts a held-out score of our choosing into each epoch's record, and keeps each epoch's weights."""

    def __init__(self, net, scores):
        self.net, self.scores, self.weights = net, scores, {}

    def on_epoch_end(self, trainer, record):
        record["score"] = self.scores[int(record["epoch"]) - 1]
        self.weights[int(record["epoch"])] = weights(self.net)


def test_early_stopping_stops_after_its_patience_keeps_the_best_weights_and_resumes_to_the_same_end(tmp_path):
    """Scores 1, 3, 2, 2.5, 2.9, 5: the best is epoch 2; with patience 3 training stops after
    epoch 5 (three epochs without a better score) and ends with epoch 2's weights, while its
    checkpoint holds epoch 5's. A run stopped by a signal in epoch 4 and resumed in new objects
    stops at the same epoch with the same weights; resumed once more, it trains no further."""
    from pyro_vae import EarlyStopping

    scores, data = [1, 3, 2, 2.5, 2.9, 5], tabular(200)

    def run(resume=None, checkpoint=None, stop_at=None):
        trainer, net = new_tabular_trainer()
        if resume:
            trainer.resume(resume)
        scripted = ScriptedScore(net, scores)
        callbacks = [scripted, EarlyStopping(patience=3, monitor="score"), *([stop_at] if stop_at else [])]
        try:
            trainer.fit(data, None, epochs=6, batch_size=50, checkpoint=checkpoint, callbacks=callbacks, **quiet)
        except TrainingInterrupted:
            pass
        return trainer, net, scripted

    straight, net, scripted = run(checkpoint=str(tmp_path / "straight.pt"))
    assert [r["epoch"] for r in straight.history] == [1, 2, 3, 4, 5]
    best = weights(net)
    assert all(torch.equal(best[k], scripted.weights[2][k]) for k in best)
    saved = torch.load(tmp_path / "straight.pt", weights_only=True)
    assert saved["epoch"] == 5 and saved["callbacks"]["EarlyStopping"]["best_epoch"] == 2
    assert all(torch.equal(saved["model"][k], scripted.weights[5][k]) for k in best)

    path = str(tmp_path / "stopped.pt")
    run(checkpoint=path, stop_at=StopAt(4, 1))
    resumed, resumed_net, _ = run(resume=path, checkpoint=path)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4, 5]
    assert all(torch.equal(best[k], v) for k, v in weights(resumed_net).items())
    again, again_net, _ = run(resume=path)  # patience ran out before: no epoch more
    assert len(again.history) == 5 and all(torch.equal(best[k], v) for k, v in weights(again_net).items())


class NoisyCopies:
    """A user's data-side transform: every training row jittered by noise drawn from the epoch's
    stream; held-out rows left as they are."""

    def train(self, batch, generator):
        x, c = batch.args
        return type(batch)((x + 0.1 * torch.randn(x.shape, generator=generator), c), {})

    def evaluation(self, data):
        return data


def test_a_transform_of_ones_own_draws_from_the_epochs_stream_and_resumes_to_the_bit(tmp_path):
    """Trainer(model, guide, transform=...) hands every training batch through the user's transform
    with the epoch's generator: the jitter differs from a run without it, and a run stopped in
    epoch 2 and resumed repeats the straight run's weights exactly, noise included."""
    data, held_out = tabular(300), tabular(100, seed=1)

    def run(transform, resume=None, checkpoint=None, callbacks=()):
        trainer, net = new_tabular_trainer(transform=transform)
        if resume:
            trainer.resume(resume)
        try:
            trainer.fit(data, held_out, epochs=3, batch_size=64, checkpoint=checkpoint, callbacks=callbacks, **quiet)
        except TrainingInterrupted:
            pass
        return weights(net)

    plain, jittered = run(None), run(NoisyCopies())
    assert not all(torch.equal(plain[k], jittered[k]) for k in plain)
    path = str(tmp_path / "ck.pt")
    run(NoisyCopies(), checkpoint=path, callbacks=[StopAt(2, 2)])
    resumed = run(NoisyCopies(), resume=path)
    assert all(torch.equal(jittered[k], resumed[k]) for k in jittered)
    with pytest.raises(ConfigError, match=r"binarize='dynamic' and a transform were both given"):
        new_tabular_trainer(transform=NoisyCopies(), binarize="dynamic")


class EpochWeights(Callback):
    """Each epoch's end weights, before any callback after it swaps them."""

    def __init__(self, net):
        self.net, self.weights = net, {}

    def on_pass_end(self, trainer):
        if trainer.position is None:
            self.weights[trainer.epoch + 1] = weights(self.net)


def test_weight_averaging_scores_and_keeps_the_plain_mean_and_resumes_to_the_bit(tmp_path):
    """WeightAveraging(start_epoch=2) over 4 epochs: training is the plain run's (the same weights
    at every epoch's end); epoch 3's held-out ELBO is the evaluation of the mean of epochs 2 and
    3 formed by hand, the run ends with the mean of epochs 2-4, and the checkpoint holds the last
    weights. A run stopped in epoch 3 and resumed ends with the same mean to the bit."""
    from pyro_vae import WeightAveraging

    data, held_out = tabular(300), tabular(100, seed=1)

    def run(averaging=True, resume=None, checkpoint=None, stop_at=None):
        trainer, net = new_tabular_trainer()
        if resume:
            trainer.resume(resume)
        seen = EpochWeights(net)
        callbacks = [seen, *([WeightAveraging(start_epoch=2)] if averaging else []), *([stop_at] if stop_at else [])]
        try:
            trainer.fit(data, held_out, epochs=4, batch_size=64, checkpoint=checkpoint, callbacks=callbacks, **quiet)
        except TrainingInterrupted:
            pass
        return trainer, net, seen

    plain, _, plain_seen = run(averaging=False)
    averaged, net, seen = run(checkpoint=str(tmp_path / "straight.pt"))
    for epoch in range(1, 5):  # averaging does not change the training
        assert all(torch.equal(plain_seen.weights[epoch][k], v) for k, v in seen.weights[epoch].items())
    mean = {k: sum(seen.weights[e][k] for e in (2, 3, 4)) / 3 for k in seen.weights[4]}
    assert all(torch.allclose(v, mean[k], atol=1e-6) for k, v in weights(net).items())
    assert [r.get("averaged_epochs") for r in averaged.history] == [None, 1, 2, 3]
    assert averaged.history[0]["test_elbo"] == plain.history[0]["test_elbo"]  # before averaging: the same

    scorer, scorer_net = new_tabular_trainer()  # evaluate the mean of epochs 2 and 3, formed by hand
    scorer_net.load_state_dict({k: (seen.weights[2][k] + seen.weights[3][k]) / 2 for k in mean})
    by_hand = scorer.evaluate(scorer.prepare_test(held_out))["elbo"]
    assert averaged.history[2]["test_elbo"] == pytest.approx(by_hand, abs=1e-4)
    saved = torch.load(tmp_path / "straight.pt", weights_only=True)
    assert all(torch.equal(saved["model"][k], seen.weights[4][k]) for k in mean)  # the last weights

    path = str(tmp_path / "stopped.pt")
    run(checkpoint=path, stop_at=StopAt(3, 1))
    resumed, resumed_net, _ = run(resume=path)
    assert all(torch.equal(v, weights(net)[k]) for k, v in weights(resumed_net).items())
    assert [r["test_elbo"] for r in resumed.history] == [r["test_elbo"] for r in averaged.history]
