"""Long runs (minutes): excluded by default, run with ``pytest -m slow``."""

import pytest

from pyro_vae import VAE, Trainer


@pytest.mark.slow
def test_ten_epochs_of_full_mnist_reach_the_reported_test_elbo(mnist, mnist_source):
    """The README's 10-epoch figure (-102.2 nats on full MNIST, dynamic binarization)."""
    if mnist_source is None:
        pytest.skip("needs full MNIST")
    trainer = Trainer(VAE(), seed=0)
    trainer.fit(mnist.train_images, mnist.test_images, epochs=10, test_every=10, progress=False, log=print)
    assert trainer.history[-1]["test_elbo"] > -104.0
