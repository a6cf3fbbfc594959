"""Figures of a trained VAE, written as PNG files (matplotlib + torchvision grids).

Each ``plot_*`` function draws one figure, or raises :class:`FigureUnavailable` with a
one-line reason when its input cannot make that figure (too few test images, images
that are not square). :func:`plot_all` draws them all and never raises.
"""

from __future__ import annotations

import math
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple, cast

import matplotlib

matplotlib.use("Agg")  # files only: no display needed (CI, servers)
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import MaxNLocator
from torchvision.utils import make_grid

from pyro_vae.errors import DiskFullError
from pyro_vae.files import save_figure
from pyro_vae.inference.evaluate import principal_plane
from pyro_vae.models.vae import VAE
from pyro_vae.rng import rng_fork

PADDING = 2  # pixels between the images of a grid


class FigureUnavailable(Exception):
    """This figure cannot be drawn from the given input; the message says why, in one line."""


#: One datapoint's shape: ``(channels, height, width)`` for images, ``(features,)`` for a table.
Shape = Optional[Tuple[int, ...]]


def _image_shape(vae: VAE, shape: Shape = None) -> Tuple[int, int, int]:
    """``(channels, height, width)`` of the images the VAE models: ``shape`` where given, else
    square grey images (28x28 for MNIST)."""
    if shape is not None:
        if len(shape) != 3:
            raise FigureUnavailable(f"a table of {math.prod(shape)} features has no image figures")
        return tuple(shape)  # type: ignore[return-value]
    side = math.isqrt(vae.x_dim)
    if side * side != vae.x_dim:
        raise FigureUnavailable(f"image figures need square images; x_dim={vae.x_dim} is not a perfect square")
    return (1, side, side)


def _image_grid(images: torch.Tensor, shape: Tuple[int, int, int], nrow: int) -> "np.ndarray":
    grid = make_grid(images.reshape(-1, *shape).clamp(0, 1).cpu(), nrow=nrow, padding=PADDING, pad_value=1.0)
    return grid[0].numpy() if shape[0] == 1 else grid.permute(1, 2, 0).numpy()  # grey: one channel for imshow


def _show(ax: "plt.Axes", grid: "np.ndarray") -> None:
    ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=1)


def _cell_centres(count: int, side: int) -> List[float]:
    """Pixel coordinates of the centres of the first ``count`` rows (or columns) of a grid."""
    return [PADDING + (side - 1) / 2 + (side + PADDING) * i for i in range(count)]


def _save(fig: "plt.Figure", path: str) -> str:
    save_figure(fig, path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_elbo_curves(history: List[Dict[str, float]], path: str) -> str:
    """Train/test ELBO per epoch, and the test ELBO's two parts: reconstruction and KL.

    Without any test evaluation in ``history`` only the train ELBO is drawn."""
    if not history:
        raise FigureUnavailable("ELBO curves need at least 1 epoch of history; got none")
    epochs = [r["epoch"] for r in history]
    tested = [r for r in history if "test_elbo" in r]
    t_epochs = [r["epoch"] for r in tested]
    fig, axes = plt.subplots(1, 3 if tested else 1, figsize=(15 if tested else 6, 4.2), squeeze=False)
    axes = axes[0]
    ax = axes[0]
    ax.plot(epochs, [r["train_elbo"] for r in history], "o-", ms=3, label="train (Trace_ELBO, MC)")
    title = "ELBO per datapoint" if tested else "Train ELBO per datapoint (no test evaluation in history)"
    ax.set(title=title, xlabel="epoch", ylabel="ELBO  [nats]")
    if tested:
        ax.plot(t_epochs, [r["test_elbo"] for r in tested], "s-", ms=3, label="test (analytic KL)")
        ax = axes[1]
        ax.plot(t_epochs, [r["test_recon"] for r in tested], "s-", ms=3, color="C2")
        ax.set(title=r"Reconstruction  $\mathbb{E}_q[\log p(x|z)]$ (test)", xlabel="epoch", ylabel="nats")
        ax = axes[2]
        ax.plot(t_epochs, [r["test_kl"] for r in tested], "s-", ms=3, color="C3")
        ax.set(title=r"$\mathrm{KL}(q(z|x)\,\|\,p(z))$ (test)", xlabel="epoch", ylabel="nats")
        fig.suptitle("ELBO = reconstruction − KL  (seed item 9)")
    axes[0].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # epochs, even with a single one
    fig.tight_layout()
    return _save(fig, path)


@torch.no_grad()
def plot_reconstructions(vae: VAE, x: torch.Tensor, path: str, n: int = 16, shape: Shape = None) -> str:
    """Rows of up to 8 test images, each above its mean reconstruction E[x | z = μ(x)]."""
    shape = _image_shape(vae, shape)
    size = math.prod(shape)
    n = min(n, len(x))
    if n == 0:
        raise FigureUnavailable("reconstructions need at least 1 test image; got 0")
    x = x[:n]
    recon = vae.reconstruct(x)
    columns = min(8, n)
    pairs = []
    for start in range(0, n, columns):
        # make_grid fills rows left to right: pad a short last row with white images
        data, mean = x[start : start + columns].reshape(-1, size), recon[start : start + columns]
        blank = torch.ones(columns - len(data), size, device=data.device)
        pairs += [torch.cat([data, blank]), torch.cat([mean, blank])]
    fig, ax = plt.subplots(figsize=(max(3.0, columns), 1.1 * len(pairs)))
    _show(ax, _image_grid(torch.cat(pairs), shape, nrow=columns))
    ax.set_yticks(_cell_centres(len(pairs), shape[1]))
    ax.set_yticklabels(["data", "reconstruction"] * (len(pairs) // 2))
    ax.set_xticks([])
    caption = f"{n} test images and their mean reconstructions" if n > 1 else "1 test image and its mean reconstruction"
    ax.set_title(caption + "\n" + r"$\mathbb{E}[x\,|\,z=\mu(x)]$")
    return _save(fig, path)


@torch.no_grad()
def plot_prior_samples(vae: VAE, path: str, n: int = 64, seed: int = 0, shape: Shape = None) -> str:
    """Decoder means E[x|z] for codes drawn from the model's prior: N(0, I), the VampPrior, or,
    for the two-layer HVAE, ancestrally from p(z2) p(z1|z2)."""
    shape = _image_shape(vae, shape)
    model, prior = vae.config.get("model", "vae"), vae.config.get("prior", "standard")
    if model == "vae" and prior == "standard":
        generator = torch.Generator().manual_seed(seed)
        z = torch.randn(n, vae.z_dim, generator=generator).to(next(vae.parameters()).device)
        images, law = vae.decoded_mean(z), r"$z \sim \mathcal{N}(0, I)$"
    else:
        with rng_fork(seed):
            images = vae.sample_prior(n)
        top = r"\frac{1}{K}\sum_k q(\cdot|u_k)" if prior == "vamp" else r"\mathcal{N}(0, I)"
        law = rf"$z_2 \sim {top}$, $z_1 \sim p(z_1|z_2)$" if model == "hvae" else rf"$z \sim {top}$ (VampPrior)"
    fig, ax = plt.subplots(figsize=(7, 7))
    _show(ax, _image_grid(images, shape, nrow=8))
    ax.axis("off")
    ax.set_title(r"Samples from the prior: $\mathbb{E}[x|z]$, " + law)
    return _save(fig, path)


@torch.no_grad()
def plot_latent_map(vae: VAE, x: torch.Tensor, labels: torch.Tensor, path: str, noun: str = "digit") -> str:
    """Posterior means E_q[z|x] of test digits (or rows, images: ``noun``), coloured by label: z itself
    when z_dim is 1 (against the label) or 2, else projected on its first two principal axes."""
    needed = 2 if vae.z_dim > 2 else 1  # PCA needs 2 points to find an axis
    if len(x) < needed:
        images = "2 test images for PCA" if needed == 2 else "1 test image"
        raise FigureUnavailable(f"latent map needs at least {images} (z_dim={vae.z_dim}); got {len(x)}")
    mu, labels = vae.posterior_mean(x).cpu(), labels.cpu()
    title = rf"Posterior means $\mu(x)$ of {len(x)} test {noun}{'s' if len(x) > 1 else ''}"
    if vae.z_dim == 1:
        # The label on the y-axis, jittered so that equal codes of one digit stay apart.
        jitter = 0.12 * torch.randn(len(mu), generator=torch.Generator().manual_seed(0))
        coords = torch.stack([mu[:, 0], labels.float() + jitter], 1)
        xlabel, ylabel, title = "z", f"{noun} label (jittered)", f"{title} (z_dim=1: z itself)"
    elif vae.z_dim == 2:
        coords, xlabel, ylabel, title = mu, r"$z_1$", r"$z_2$", f"{title} (z_dim=2: z itself)"
    else:
        plane = principal_plane(mu)
        if plane is None:  # equal up to rounding: no direction to project on
            raise FigureUnavailable(f"latent map: the {len(x)} posterior means are all equal; PCA has no axis to show")
        coords, explained = plane.project(mu), plane.explained
        xlabel = f"PC 1 of posterior means ({100 * explained[0]:.0f}% of variance)"
        ylabel = f"PC 2 ({100 * explained[1]:.0f}% of variance)"
        title = f"{title} (z_dim={vae.z_dim}, PCA)"
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    size = 6 if len(x) > 500 else 24  # small dots only where there are many
    classes = max(10, int(labels.max()) + 1) if len(labels) else 10
    cmap = plt.get_cmap("tab10" if classes == 10 else "tab20" if classes <= 20 else "viridis", classes)
    shown = 10 if noun == "digit" else max(int(labels.max()) + 1, 1)  # a colour bar of the classes there are
    xs, ys = coords.T.numpy()  # coords is [N, 2]
    points = ax.scatter(xs, ys, c=labels.numpy(), cmap=cmap, s=size, alpha=0.8, vmin=-0.5, vmax=classes - 0.5)
    if vae.z_dim == 1:
        ax.set_yticks(sorted(set(labels.tolist())))
    else:
        bar = fig.colorbar(points, ax=ax, ticks=range(shown), boundaries=[b - 0.5 for b in range(shown + 1)])
        bar.set_label("digit label" if noun == "digit" else "class")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    return _save(fig, path)


@torch.no_grad()
def plot_interpolation(
    vae: VAE, x: torch.Tensor, labels: torch.Tensor, path: str, steps: int = 10, shape: Shape = None
) -> str:
    """Decoder means along straight lines between the posterior means of pairs of test
    images: pairs of different digits where the labels allow, else of different images."""
    shape = _image_shape(vae, shape)
    if len(x) < 2:
        raise FigureUnavailable(f"interpolation needs at least 2 test images; got {len(x)}")
    pairs = _distinct_label_pairs(labels, 5)
    title = "Latent interpolation between test digits (decoder means)"
    if not pairs:  # a single digit in the test set: pairs of different images of it
        pairs = [(2 * k, 2 * k + 1) for k in range(min(5, len(x) // 2))]
        title = "Latent interpolation between different test images of one digit (decoder means)"
    mu = vae.posterior_mean(x[[i for pair in pairs for i in pair]])
    t = torch.linspace(0, 1, steps, device=mu.device)[:, None]
    rows = [vae.decoded_mean(mu[2 * k] * (1 - t) + mu[2 * k + 1] * t) for k in range(len(pairs))]
    fig, ax = plt.subplots(figsize=(9, 1.0 * len(pairs) + 0.8))
    _show(ax, _image_grid(torch.cat(rows), shape, nrow=steps))
    ax.set_yticks(_cell_centres(len(pairs), shape[1]))
    ax.set_yticklabels([f"{int(labels[a])} → {int(labels[b])}" for a, b in pairs])
    ax.set_xticks(_cell_centres(steps, shape[2]))
    ax.set_xticklabels([f"{v:.2f}" for v in torch.linspace(0, 1, steps).tolist()])
    ax.set_xlabel(r"$t$ in $z = (1-t)\,\mu(x_a) + t\,\mu(x_b)$")
    ax.set_title(title)
    return _save(fig, path)


@torch.no_grad()
def plot_feature_reconstructions(
    vae: VAE, x: torch.Tensor, path: str, names: Optional[Sequence[str]] = None, most: int = 12
) -> str:
    """For a table: each feature's test values against their mean reconstructions E[x | z = μ(x)],
    one panel per feature (the first ``most``), the diagonal where they would agree."""
    if len(x) == 0:
        raise FigureUnavailable("feature reconstructions need at least 1 test row; got 0")
    recon = vae.reconstruct(x).cpu()
    x = x.reshape(len(x), -1).cpu()
    count = min(most, x.shape[1])
    columns = min(4, count)
    rows = -(-count // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.0 * columns, 2.8 * rows), squeeze=False)
    for j, ax in enumerate(axes.flat):
        if j >= count:
            ax.axis("off")
            continue
        ax.scatter(x[:, j].numpy(), recon[:, j].numpy(), s=8, alpha=0.6)
        low, high = float(min(x[:, j].min(), recon[:, j].min())), float(max(x[:, j].max(), recon[:, j].max()))
        ax.plot([low, high], [low, high], color="0.5", lw=1)
        ax.set_title(names[j] if names is not None and j < len(names) else f"feature {j}", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("test value")
    for ax in axes[:, 0]:
        ax.set_ylabel("reconstruction")
    shown = f"the first {count} of {x.shape[1]} features" if count < x.shape[1] else f"all {count} features"
    fig.suptitle(rf"{len(x)} test rows and their mean reconstructions $\mathbb{{E}}[x\,|\,z=\mu(x)]$, {shown}")
    fig.tight_layout()
    return _save(fig, path)


def _distinct_label_pairs(labels: torch.Tensor, n: int) -> Sequence[Tuple[int, int]]:
    """The first test digit of labels (0,1), (2,3), ...: pairs of different digits (none if
    fewer than 2 digits are present)."""
    first: Dict[int, int] = {}
    for i, label in enumerate(labels.tolist()):
        first.setdefault(label, i)
    digits = sorted(first)
    return [(first[digits[2 * k]], first[digits[2 * k + 1]]) for k in range(min(n, len(digits) // 2))]


def plot_all(
    vae: VAE,
    history: List[Dict[str, float]],
    x: torch.Tensor,
    labels: Optional[torch.Tensor],
    out: str,
    shape: Shape = None,
    feature_names: Optional[Sequence[str]] = None,
    noun: str = "digit",
) -> Tuple[Dict[str, str], Dict[str, str]]:
    """Every figure of a run into directory ``out``; never raises. Images (``shape`` of three
    dimensions, or None: square grey images) get the image figures; a table (``shape`` of one)
    its features' reconstructions instead. The latent map and the interpolation need ``labels``.

    Returns ``(written, not_drawn)``: name -> path of each figure written, and name ->
    one-line reason for each one that was not. A figure that fails unexpectedly is
    reported as ``"unexpected TYPE: message (please report)"``, so that a bug in a figure
    never costs the run its metrics and checkpoint.
    """

    def labelled(plot: Callable[[str], str]) -> Callable[[str], str]:
        if labels is not None:
            return plot

        def unavailable(path: str) -> str:
            raise FigureUnavailable("the data has no labels to colour or pair the datapoints by")

        return unavailable

    table = shape is not None and len(shape) == 1
    draw: Dict[str, Callable[[str], str]] = {"elbo_curves": lambda path: plot_elbo_curves(history, path)}
    if table:
        draw["feature_reconstructions"] = lambda path: plot_feature_reconstructions(vae, x, path, feature_names)
    else:
        draw["reconstructions"] = lambda path: plot_reconstructions(vae, x, path, shape=shape)
        draw["prior_samples"] = lambda path: plot_prior_samples(vae, path, shape=shape)
    # labelled() draws these two only when labels is not None
    draw["latent_map"] = labelled(
        lambda path: plot_latent_map(vae, x[:2000], cast(torch.Tensor, labels)[:2000], path, noun)
    )
    if not table:
        draw["interpolation"] = labelled(
            lambda path: plot_interpolation(vae, x, cast(torch.Tensor, labels), path, shape=shape)
        )
    written: Dict[str, str] = {}
    not_drawn: Dict[str, str] = {}
    was_training = vae.training
    vae.eval()
    try:
        for name, plot in draw.items():
            open_before = set(plt.get_fignums())
            try:
                written[name] = plot(os.path.join(out, f"{name}.png"))
                continue
            except (FigureUnavailable, DiskFullError) as why:  # expected: said as it is
                reason = str(why)
            except Exception as error:
                reason = f"unexpected {type(error).__name__}: {error} (please report)"
            not_drawn[name] = " ".join(reason.split())  # one line, whatever the message
            for number in set(plt.get_fignums()) - open_before:
                plt.close(number)  # the failed figure's, not the caller's
    finally:
        vae.train(was_training)
    return written, not_drawn
