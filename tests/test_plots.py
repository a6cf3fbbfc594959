"""pyro_vae.plots: every figure on any test subset and any z_dim; plot_all never raises."""

import os

import matplotlib.image
import pytest
import torch

from pyro_vae.figures import plots
from pyro_vae.figures.plots import FigureUnavailable, plot_all
from pyro_vae.models.vae import VAE

NAMES = {"elbo_curves", "reconstructions", "prior_samples", "latent_map", "interpolation"}
HISTORY = [
    {"epoch": 1, "train_elbo": -200.0, "test_elbo": -190.0, "test_recon": -170.0, "test_kl": 20.0},
    {"epoch": 2, "train_elbo": -150.0, "test_elbo": -145.0, "test_recon": -120.0, "test_kl": 25.0},
]


def binary_images(n, seed=0):
    return torch.bernoulli(torch.full((n, 784), 0.3), generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def axes_of(monkeypatch):
    """The first axes of each figure saved, by file name (read after the figure is closed)."""
    seen = {}
    real_save = plots._save

    def spy(fig, path):
        seen[os.path.basename(path)] = fig.axes[0]
        return real_save(fig, path)

    monkeypatch.setattr(plots, "_save", spy)
    return seen


def assert_pngs(written, names):
    assert set(written) == set(names)
    for name, path in written.items():
        assert os.path.basename(path) == f"{name}.png"
        assert os.path.getsize(path) > 1000, name
        pixels = matplotlib.image.imread(path)
        assert pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 50 and pixels.shape[2] in (3, 4), name


def assert_one_line_reasons(not_drawn):
    for name, reason in not_drawn.items():
        assert reason and "\n" not in reason, name


def test_one_test_image(tmp_path):
    vae = VAE(z_dim=4, hidden_dims=(16,))
    written, not_drawn = plot_all(vae, HISTORY, binary_images(1), torch.tensor([7]), str(tmp_path))
    assert set(not_drawn) <= {"interpolation", "latent_map"}
    assert_pngs(written, NAMES - set(not_drawn))
    assert_one_line_reasons(not_drawn)
    assert not_drawn["interpolation"] == "interpolation needs at least 2 test images; got 1"
    assert "latent map needs at least 2 test images" in not_drawn["latent_map"]
    assert vae.training  # plot_all puts the VAE back in the mode it found it in


def test_single_digit_subset_draws_everything(tmp_path, axes_of):
    vae = VAE(z_dim=4, hidden_dims=(16,))
    written, not_drawn = plot_all(vae, HISTORY, binary_images(20), torch.zeros(20, dtype=torch.long), str(tmp_path))
    assert not_drawn == {}
    assert_pngs(written, NAMES)
    rows = [label.get_text() for label in axes_of["interpolation.png"].get_yticklabels()]
    assert rows == ["0 → 0"] * 5  # pairs of different images when there is one digit
    assert "different test images of one digit" in axes_of["interpolation.png"].get_title()
    assert "PC 1" in axes_of["latent_map.png"].get_xlabel()


@pytest.mark.parametrize("z_dim", [1, 2])
def test_small_latent_spaces_draw_everything_with_z_axes(tmp_path, axes_of, z_dim):
    vae = VAE(z_dim=z_dim, hidden_dims=(16,))
    labels = torch.arange(20) % 10
    written, not_drawn = plot_all(vae, HISTORY, binary_images(20), labels, str(tmp_path))
    assert not_drawn == {}
    assert_pngs(written, NAMES)
    latent = axes_of["latent_map.png"]
    assert f"z_dim={z_dim}: z itself" in latent.get_title()
    assert "z" in latent.get_xlabel() and "PC" not in latent.get_xlabel()
    if z_dim == 2:
        assert latent.get_xlabel() == r"$z_1$" and latent.get_ylabel() == r"$z_2$"
    else:
        assert "label" in latent.get_ylabel()


def test_unexpected_failure_is_reported_not_raised(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(plots, "plot_reconstructions", broken)
    vae = VAE(z_dim=4, hidden_dims=(16,))
    vae.eval()
    written, not_drawn = plot_all(vae, HISTORY, binary_images(6), torch.arange(6), str(tmp_path))
    assert not_drawn == {"reconstructions": "unexpected RuntimeError: boom second line (please report)"}
    assert_pngs(written, NAMES - {"reconstructions"})
    assert not vae.training  # restored to eval, as it was


def test_reconstructions_of_three_images_are_one_row_pair(tmp_path, axes_of):
    vae = VAE(z_dim=4, hidden_dims=(16,))
    path = plots.plot_reconstructions(vae, binary_images(3), str(tmp_path / "reconstructions.png"))
    ax = axes_of["reconstructions.png"]
    assert [label.get_text() for label in ax.get_yticklabels()] == ["data", "reconstruction"]
    assert ax.images[0].get_array().shape == (2 * 30 + 2, 3 * 30 + 2)  # 2 rows x 3 columns of 28 + padding
    assert matplotlib.image.imread(path).ndim == 3


def test_elbo_curves_without_test_numbers_and_with_one_epoch(tmp_path, axes_of):
    history = [{"epoch": 1, "train_elbo": -180.0}]
    path = plots.plot_elbo_curves(history, str(tmp_path / "elbo_curves.png"))
    assert os.path.getsize(path) > 1000
    ax = axes_of["elbo_curves.png"]
    low, high = ax.get_xlim()
    assert [tick for tick in ax.get_xticks() if low <= tick <= high] == [1]  # one integer epoch tick
    with pytest.raises(FigureUnavailable, match="at least 1 epoch"):
        plots.plot_elbo_curves([], str(tmp_path / "none.png"))


def test_non_square_images_only_lose_the_image_figures(tmp_path):
    vae = VAE(x_dim=30, z_dim=2, hidden_dims=(8,))
    x = torch.bernoulli(torch.full((4, 30), 0.5))
    written, not_drawn = plot_all(vae, HISTORY, x, torch.arange(4), str(tmp_path))
    assert set(written) == {"elbo_curves", "latent_map"}
    assert set(not_drawn) == {"reconstructions", "prior_samples", "interpolation"}
    assert all("x_dim=30" in reason for reason in not_drawn.values())
    assert_one_line_reasons(not_drawn)


def test_latent_map_of_identical_codes_says_why(tmp_path):
    vae = VAE(z_dim=4, hidden_dims=(16,))
    same_image = binary_images(1).expand(3, 784)
    with pytest.raises(FigureUnavailable, match="posterior means are all equal"):
        plots.plot_latent_map(vae, same_image, torch.tensor([1, 2, 3]), str(tmp_path / "latent_map.png"))
    with pytest.raises(FigureUnavailable, match="at least 1 test image"):
        no_images = same_image[:0]
        plots.plot_latent_map(VAE(z_dim=2, hidden_dims=(16,)), no_images, torch.tensor([]), str(tmp_path / "x.png"))
