"""The figures of the M2 and CVAE examples, in process, on tiny untrained networks: each is
written where asked, at the size its layout implies, and the digit grids put cell (i, j) where
the layout says. (tests/test_family_examples.py draws them from the examples, out of the fast loop.)"""

import matplotlib.image
import pytest
import torch

from pyro_vae.figures.cvae_plots import plot_completions
from pyro_vae.figures.ssvae_plots import _grid, plot_accuracy, plot_class_samples, plot_style_transfer
from pyro_vae.models.cvae import CVAE, Baseline
from pyro_vae.models.ssvae import SSVAE


def image(path):
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels[..., :3].std() > 0.01, "blank figure"
    return pixels


def test_the_grid_puts_image_i_j_at_row_i_column_j():
    images = torch.arange(6 * 784, dtype=torch.float).reshape(6, 784)
    grid = _grid(images, 2, 3)
    assert grid.shape == (56, 84)
    for i in range(2):
        for j in range(3):
            assert torch.equal(grid[28 * i : 28 * (i + 1), 28 * j : 28 * (j + 1)], images[3 * i + j].reshape(28, 28))


@pytest.fixture
def ssvae():
    torch.manual_seed(0)
    return SSVAE(z_dim=4, hidden_dims=(16,))


def test_the_m2_figures_are_drawn_from_an_untrained_model(ssvae, mnist, tmp_path):
    x, y = mnist.test_images[:300], mnist.test_labels[:300]
    binary = (x > 0.5).float()
    style = image(plot_style_transfer(ssvae, binary, y, str(tmp_path / "style.png"), rows=3))
    samples = image(plot_class_samples(ssvae, str(tmp_path / "samples.png"), per_class=4))
    assert style.shape[1] > style.shape[0]  # 3 rows of 11 digits: wider than tall
    assert samples.shape[0] > 0.8 * samples.shape[1]  # 10 rows of 4: about square with its title


def test_the_accuracy_figure_draws_held_out_picks_and_averaged_epochs(tmp_path):
    history = [{"epoch": e, "test_accuracy": 0.5 + e / 20, "validation_accuracy": 0.5 + e / 25} for e in range(1, 6)]
    for record in history[3:]:
        record.update(averaged_epochs=record["epoch"] - 3, unaveraged_test_accuracy=record["test_accuracy"] - 0.01)
    runs = {"100": {"history": history, "best_epoch": 4}, "600": {"history": history[:3]}}
    pixels = image(plot_accuracy(runs, str(tmp_path / "accuracy.png")))
    assert pixels.shape[:2] == (420, 600)  # 5 x 3.5 inches at 120 dpi


def test_the_cvae_figure_has_a_panel_per_quadrant_count(mnist, tmp_path):
    torch.manual_seed(0)
    nets = {}
    for k in (1, 3):
        nets[("cvae", k)] = CVAE(k, z_dim=2, hidden_dims=(8,))
        nets[("baseline", k)] = Baseline(k, hidden_dims=(8,))
    pixels = image(plot_completions(nets, mnist.test_images[:3], (1, 3), str(tmp_path / "c.png"), num_samples=2))
    one = image(plot_completions(nets, mnist.test_images[:3], (1,), str(tmp_path / "c1.png"), num_samples=2))
    assert pixels.shape[0] > 1.6 * one.shape[0]  # two panels stacked
