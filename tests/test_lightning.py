"""The Lightning adapter (pyro_vae.training.lightning.SVIModule): a user's model and guide and a VAE
of this library trained under lightning.Trainer, checked against the closed-form evidence."""

import warnings

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

lightning = pytest.importorskip("lightning")  # the optional extra; the test extra installs it

from test_user_model import TabularVAE, ppca_problem, tabular  # noqa: E402

from pyro_vae import VAE, binarize  # noqa: E402
from pyro_vae.training.lightning import SVIModule  # noqa: E402


def fit(module, train, held_out=None, epochs=1, batch_size=100):
    trainer = lightning.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        trainer.fit(
            module,
            DataLoader(train, batch_size=batch_size, shuffle=True),
            None if held_out is None else DataLoader(held_out, batch_size=1000),
        )
    return trainer


def test_a_users_linear_gaussian_model_reaches_the_exact_evidence_under_lightning():
    """The same closed form as tests/test_user_model.py: the guide can be the exact posterior, so
    the trained ELBO must reach log p(x); Lightning's logged held-out ELBO estimates it."""
    lg, train, test, guide = ppca_problem()
    module = SVIModule(lg.model, guide, lr=0.01)
    trainer = fit(module, TensorDataset(train), TensorDataset(test), epochs=15)
    assert module.num_data == 3000  # N read off the training dataloader: minibatches scaled by N/B
    with torch.no_grad():
        closed_form = lg.analytic_elbo(test, *guide.loc_scale_tril(test)).mean().item()
        evidence = lg.log_evidence(test).mean().item()
    assert 0 <= evidence - closed_form < 0.02
    assert trainer.callback_metrics["val_elbo"].item() == pytest.approx(closed_form, abs=0.1)


def test_a_users_model_with_two_arguments_and_a_vae_train_under_lightning():
    torch.manual_seed(3)
    net = TabularVAE()
    x, c = tabular(600)
    before = SVIModule(net.model, net.guide)
    first = fit(before, TensorDataset(x, c), TensorDataset(x, c), epochs=1, batch_size=50)
    after = fit(before, TensorDataset(x, c), TensorDataset(x, c), epochs=6, batch_size=50)
    assert after.callback_metrics["val_elbo"] > first.callback_metrics["val_elbo"]
    assert set(dict(before.named_parameters())) == {f"body.{k}" for k, _ in net.named_parameters()}

    torch.manual_seed(0)
    vae = VAE(z_dim=4, hidden_dims=(32,))
    images = binarize(torch.rand(256, 784), "fixed")
    module = SVIModule(vae, lr=1e-2)
    trainer = fit(module, TensorDataset(images), TensorDataset(images), epochs=3, batch_size=64)
    assert torch.isfinite(trainer.callback_metrics["val_elbo"]) and module.num_data == 256


def test_m2_trains_under_lightning_with_its_labelled_batches(mnist):
    """The transform carries M2's labelled minibatches into Lightning's steps: after one epoch on
    the unlabelled images the classifier is far above chance (0.1)."""
    from pyro_vae.data.semi_supervised import LabelledBatches, labelled_split
    from pyro_vae.errors import ConfigError
    from pyro_vae.models.ssvae import SSVAE, SemiSupervisedELBO

    torch.manual_seed(0)
    data = mnist.subset(3000, 1000)
    labelled, unlabelled = labelled_split(data.train_labels, 100)
    batches = LabelledBatches(data.train_images[labelled], data.train_labels[labelled], 100)
    vae = SSVAE(z_dim=20, hidden_dims=(256,), alpha=300.0)
    with pytest.raises(ConfigError, match="M2 trains on the semi-supervised objective"):
        SVIModule(vae)
    module = SVIModule(vae, objective=SemiSupervisedELBO(vae, batches.num_labelled), transform=batches, validate=False)
    fit(module, TensorDataset(data.train_images[unlabelled].flatten(1)), epochs=3, batch_size=100)
    accuracy = vae.accuracy(data.test_images, data.test_labels)
    print(f"M2 under Lightning, 100 labels, 3 epochs of 2,900 digits: test accuracy {accuracy:.3f}")
    assert accuracy > 0.5, accuracy
