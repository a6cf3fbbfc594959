"""The CVAE (pyro_vae.models.cvae): the importance-sampled conditional log-likelihood against an exact
linear-Gaussian conditional model, the baseline's exact value, the quadrant split, a short real run."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.nn import functional as F

from pyro_vae import EarlyStopping, Trainer
from pyro_vae.data.images import binarize
from pyro_vae.errors import ConfigError, InvalidDataError
from pyro_vae.models.cvae import (
    CVAE,
    Baseline,
    QuadrantPairs,
    conditional_log_likelihood,
    join_quadrants,
    quadrant_mask,
    split_quadrants,
)
from pyro_vae.models.plate import data_plate

torch.set_default_dtype(torch.float64)
G = torch.Generator().manual_seed(0)
DX, DZ, DY = 3, 2, 4
A, a = torch.randn(DZ, DX, generator=G), torch.randn(DZ, generator=G)
S = torch.rand(DZ, generator=G) + 0.5  # prior scales of z given x
Bm, C, c = torch.randn(DY, DZ, generator=G), torch.randn(DY, DX, generator=G), torch.randn(DY, generator=G)
SIGMA = 0.7
torch.set_default_dtype(torch.float32)


def lg_model(x, y=None, num_data=None):
    """z|x ~ N(Ax + a, diag S^2), y|x,z ~ N(Bz + Cx + c, SIGMA^2 I): x conditions, never sampled."""
    with data_plate(x.shape[0], num_data, x.device):
        z = pyro.sample("z", dist.Normal(x @ A.T + a, S).to_event(1))
        pyro.sample("y", dist.Normal(z @ Bm.T + x @ C.T + c, SIGMA).to_event(1), obs=y)


def exact_posterior(x, y):
    """q(z|x,y) = p(z|x,y): Gaussian conditioning."""
    precision = torch.diag(S**-2) + Bm.T @ Bm / SIGMA**2
    cov = torch.linalg.inv(precision)
    mean = ((x @ A.T + a) * S**-2 + (y - x @ C.T - c) @ Bm / SIGMA**2) @ cov
    return mean, cov


def lg_guide(x, y, num_data=None, shift=0.0):
    mean, cov = exact_posterior(x, y)
    with data_plate(x.shape[0], num_data, x.device):
        pyro.sample("z", dist.MultivariateNormal(mean + shift, cov))


def exact_cll(x, y):
    """log p(y|x) = log N(y; B(Ax + a) + Cx + c, B S^2 B^T + SIGMA^2 I)."""
    mean = (x @ A.T + a) @ Bm.T + x @ C.T + c
    cov = Bm @ torch.diag(S**2) @ Bm.T + SIGMA**2 * torch.eye(DY, dtype=x.dtype)
    return dist.MultivariateNormal(mean, cov).log_prob(y)


def test_conditional_log_likelihood_equals_the_exact_linear_gaussian_one():
    x = torch.randn(7, DX, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.randn(7, DY, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    exact = exact_cll(x, y)
    for k in (1, 10):  # with the exact posterior as proposal every weight is p(y|x)
        estimate = conditional_log_likelihood(lg_model, lg_guide, x, y, num_samples=k, batch_size=3)
        error = float((estimate - exact).abs().max())
        print(f"K={k}: max |log p_K(y|x) - log p(y|x)| = {error:.2e}")
        assert error < 1e-6, error
    # power: a shifted proposal is no longer exact at K=1, and is a lower bound on average
    shifted = conditional_log_likelihood(
        lg_model, lambda x, y, num_data=None: lg_guide(x, y, shift=0.5), x, y, num_samples=1
    )
    assert float((shifted - exact).abs().max()) > 1e-2
    many = conditional_log_likelihood(
        lg_model, lambda x, y, num_data=None: lg_guide(x, y, shift=0.5), x, y, num_samples=4000
    )
    assert float((many - exact).abs().max()) < 0.05


def test_the_baseline_likelihood_is_its_bernoulli_log_probability():
    net = Baseline(2, hidden_dims=(8,))
    x, y = split_quadrants(torch.bernoulli(torch.full((5, 784), 0.3)), 2)
    value = conditional_log_likelihood(net.model, net.guide, x, y, num_samples=3)
    exact = -F.binary_cross_entropy_with_logits(net.net(x), y, reduction="none").sum(-1)
    assert float((value - exact.detach()).abs().max()) < 1e-4


def test_quadrants_split_and_join():
    images = torch.rand(3, 784)
    for k in (1, 2, 3):
        x, y = split_quadrants(images, k)
        assert x.shape == (3, 196 * k) and y.shape == (3, 196 * (4 - k))
        assert torch.equal(join_quadrants(x, y, k), images)
        assert int(quadrant_mask(k).sum()) == 196 * k
    bottom_left = quadrant_mask(1).reshape(28, 28)
    assert bottom_left[14:, :14].all() and not bottom_left[:14].any() and not bottom_left[:, 14:].any()


@pytest.mark.parametrize(
    "x_cols, y_cols, words",
    [
        (196, 588, "x must be the pixels of 2 input quadrant(s), shape [B, 392]"),
        (392, 196, "y must be the pixels of the 2 missing quadrant(s), shape [4, 392]"),
    ],
)
def test_wrong_quadrant_shapes_get_one_clear_line(x_cols, y_cols, words):
    net = CVAE(2, z_dim=2, hidden_dims=(8,))
    with pytest.raises(InvalidDataError) as info:
        net.model(torch.zeros(4, x_cols), torch.zeros(4, y_cols))
    assert words in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="1, 2 or 3"):
        CVAE(4)


def fit(
    net,
    images,
    num_inputs,
    held_out=None,
    epochs=1,
    batch_size=100,
    binarize="dynamic",
    callbacks=(),
    checkpoint=None,
    resume=None,
    lr=1e-3,
):
    """What examples/cvae.py does: the Trainer on (x, y) pairs split from each binarized batch."""
    trainer = Trainer(net.model, net.guide, lr=lr, transform=QuadrantPairs(num_inputs, binarize))
    if resume:
        trainer.resume(resume)
    return trainer.fit(
        images,
        held_out,
        epochs=epochs,
        batch_size=batch_size,
        checkpoint=checkpoint,
        callbacks=callbacks,
        progress=False,
        log=None,
    )


def test_short_real_run_beats_the_untrained_model(mnist):
    """200 steps of 100 digits on one input quadrant: the test CLL (K=20, 500 test
    digits) improves on the untrained CVAE's. Measured: 409.6 -> 110.5 nats (embedded sample,
    4,000 digits, 5 epochs), 409.4 -> 115.7 (full MNIST, 10,000 digits, 2 epochs), about 5 s."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = CVAE(1, z_dim=10, hidden_dims=(256,))
    test = binarize(mnist.test_images[:500], "fixed")
    x, y = split_quadrants(test, 1)
    before = float(conditional_log_likelihood(net.model, net.guide, x, y, num_samples=20).mean())
    images = mnist.train_images[:10000]
    fit(net, images, 1, epochs=200 * 100 // len(images))
    after = float(conditional_log_likelihood(net.model, net.guide, x, y, num_samples=20).mean())
    print(f"CVAE, 1 quadrant, 200 steps: test -log p(y|x) {-before:.1f} -> {-after:.1f} nats")
    assert after > before + 100, (before, after)


def test_the_guide_contract_holds_given_the_output():
    from pyro_vae.inference.guide_contract import check_guide

    net = CVAE(3, z_dim=3, hidden_dims=(8,))
    x, y = split_quadrants(torch.bernoulli(torch.full((2, 784), 0.3)), 3)
    check_guide(
        lambda x, num_data=None: net.model(x, y, num_data=num_data),
        lambda x, num_data=None: net.guide(x, y, num_data=num_data),
        x,
    )


def test_a_resumed_fit_is_bit_identical_to_an_uninterrupted_one(mnist, tmp_path):
    """Two epochs in one go against one, stop, one more from the checkpoint: the same weights."""
    torch.set_num_threads(1)
    images = mnist.train_images[:300]
    torch.manual_seed(2)
    straight = CVAE(2, z_dim=3, hidden_dims=(16,))
    whole = fit(straight, images, 2, epochs=2)
    torch.manual_seed(2)
    first = CVAE(2, z_dim=3, hidden_dims=(16,))
    path = str(tmp_path / "cvae.pt")
    fit(first, images, 2, epochs=1, checkpoint=path)
    resumed = CVAE(2, z_dim=3, hidden_dims=(16,))
    rest = fit(resumed, images, 2, epochs=2, resume=path)
    assert [r["train_elbo"] for r in rest] == [r["train_elbo"] for r in whole]
    for name, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_early_stopping_keeps_the_best_epoch_on_held_out_images(mnist, tmp_path):
    """The held-out ELBO (for the baseline exactly log p(y|x)) is recomputed for the weights the
    run ends with: it is the best over the epochs; training stops ``patience`` epochs after it; a
    resumed run ends the same."""
    torch.set_num_threads(1)
    images, held = mnist.train_images[:300], mnist.train_images[300:400]
    options = dict(epochs=40, batch_size=50, lr=3e-3, binarize="none", checkpoint=str(tmp_path / "b.pt"))
    torch.manual_seed(3)
    net = Baseline(3, (512,))  # 300 grey digits, a wide net, a large rate: it overfits within ~20 epochs
    history = fit(net, images, 3, held, callbacks=[EarlyStopping(2)], **options)
    elbos = [r["test_elbo"] for r in history]
    best = max(range(len(elbos)), key=elbos.__getitem__)
    print("held-out ELBOs:", [round(v, 2) for v in elbos], "best epoch", best + 1)
    assert len(history) == best + 1 + 2 < 40  # stopped by patience, not by the epoch count
    scorer = Trainer(net.model, net.guide, transform=QuadrantPairs(3, "none"))
    assert scorer.evaluate(scorer.prepare_test(held))["elbo"] == pytest.approx(elbos[best], rel=1e-6)
    again = Baseline(3, (512,))
    fit(again, images, 3, held, callbacks=[EarlyStopping(2)], resume=options["checkpoint"], **options)
    for name, value in net.state_dict().items():
        assert torch.equal(value, again.state_dict()[name]), name


def test_the_cvae_transform_binarizes_then_splits_and_holds_out_thresholded_digits():
    images = torch.rand(6, 784, generator=torch.Generator().manual_seed(0))
    pairs = QuadrantPairs(1)
    from pyro_vae.data.batches import Batch, TensorSource

    x, y = pairs.train(Batch((images,), {}), torch.Generator().manual_seed(4)).args
    expected = split_quadrants(torch.bernoulli(images, generator=torch.Generator().manual_seed(4)), 1)
    assert torch.equal(x, expected[0]) and torch.equal(y, expected[1])
    held = pairs.evaluation(TensorSource(Batch((images,), {}))).batch.args
    assert all(torch.equal(a, b) for a, b in zip(held, split_quadrants((images > 0.5).float(), 1)))
    with pytest.raises(ConfigError, match="1, 2 or 3"):
        QuadrantPairs(4)


def test_early_stopping_keeps_the_best_both_ways_the_first_of_a_tie_and_survives_a_checkpoint():
    """The rule that picks M2's epoch (highest held-out accuracy) and the CVAE's (lowest loss)."""
    from types import SimpleNamespace

    from pyro_vae.training import EarlyStopping

    net = torch.nn.Linear(1, 1, bias=False)
    trainer = SimpleNamespace(program=SimpleNamespace(module=net), epoch=0, should_stop=False)
    for mode, scores in (("max", [0.5, 0.7, 0.7, 0.6]), ("min", [3.0, 2.0, 2.0, 2.5])):
        keep = EarlyStopping(None, monitor="score", mode=mode)
        for epoch, score in enumerate(scores, 1):
            trainer.epoch = epoch
            with torch.no_grad():
                net.weight.fill_(epoch)  # the weights tell which epoch they are
            keep.on_epoch_end(trainer, {"epoch": epoch, "score": score})
        again = EarlyStopping(None, monitor="score", mode=mode)
        again.load_state_dict(keep.state_dict())  # as a checkpoint carries it
        assert net.weight.item() == 4 and not trainer.should_stop  # the last epoch's, until training ends
        again.on_fit_end(trainer, None)
        assert again.best_epoch == 2 and net.weight.item() == 2
