"""Figures of a trained VAE, written as PNG files (matplotlib + torchvision grids)."""

from __future__ import annotations

import os
from typing import Dict, List, Sequence

import matplotlib

matplotlib.use("Agg")  # files only: no display needed (CI, servers)
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

from .vae import VAE  # noqa: E402


def _image_grid(images: torch.Tensor, nrow: int) -> torch.Tensor:
    grid = make_grid(images.reshape(-1, 1, 28, 28).clamp(0, 1).cpu(), nrow=nrow, padding=2, pad_value=1.0)
    return grid[0]  # one channel for imshow


def _save(fig: "plt.Figure", path: str) -> str:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_elbo_curves(history: List[Dict[str, float]], path: str) -> str:
    """Train/test ELBO per epoch, and the test ELBO's two parts: reconstruction and KL."""
    epochs = [r["epoch"] for r in history]
    tested = [r for r in history if "test_elbo" in r]
    t_epochs = [r["epoch"] for r in tested]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    ax.plot(epochs, [r["train_elbo"] for r in history], "o-", ms=3, label="train (Trace_ELBO, MC)")
    ax.plot(t_epochs, [r["test_elbo"] for r in tested], "s-", ms=3, label="test (analytic KL)")
    ax.set(title="ELBO per datapoint", xlabel="epoch", ylabel="ELBO  [nats]")
    ax.legend()
    ax = axes[1]
    ax.plot(t_epochs, [r["test_recon"] for r in tested], "s-", ms=3, color="C2")
    ax.set(title=r"Reconstruction  $\mathbb{E}_q[\log p(x|z)]$ (test)", xlabel="epoch", ylabel="nats")
    ax = axes[2]
    ax.plot(t_epochs, [r["test_kl"] for r in tested], "s-", ms=3, color="C3")
    ax.set(title=r"$\mathrm{KL}(q(z|x)\,\|\,p(z))$ (test)", xlabel="epoch", ylabel="nats")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle("ELBO = reconstruction − KL  (seed item 9)")
    fig.tight_layout()
    return _save(fig, path)


@torch.no_grad()
def plot_reconstructions(vae: VAE, x: torch.Tensor, path: str, n: int = 16) -> str:
    """Rows of test images above their mean reconstructions E[x | z = μ(x)]."""
    x = x[:n]
    recon = vae.reconstruct(x)
    pairs = []
    for start in range(0, n, 8):
        pairs += [x[start:start + 8], recon[start:start + 8]]
    rows = torch.cat(pairs)
    fig, ax = plt.subplots(figsize=(8, 2.2 * (n // 8)))
    ax.imshow(_image_grid(rows, nrow=8), cmap="gray", vmin=0, vmax=1)
    ax.set_yticks([15 + 30 * i for i in range(len(pairs))])
    ax.set_yticklabels(["data", "reconstruction"] * (len(pairs) // 2))
    ax.set_xticks([])
    ax.set_title(r"Test digits and mean reconstructions $\mathbb{E}[x\,|\,z=\mu(x)]$")
    return _save(fig, path)


@torch.no_grad()
def plot_prior_samples(vae: VAE, path: str, n: int = 64, seed: int = 0) -> str:
    """Decoder means E[x|z] for z drawn from the prior N(0, I)."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n, vae.z_dim, generator=generator).to(next(vae.parameters()).device)
    images = vae.decoded_mean(z)
    fig, ax = plt.subplots(figsize=(7, 7))
    ax.imshow(_image_grid(images, nrow=8), cmap="gray", vmin=0, vmax=1)
    ax.axis("off")
    ax.set_title(r"Samples from the prior: $\mathbb{E}[x|z]$, $z \sim \mathcal{N}(0, I)$")
    return _save(fig, path)


@torch.no_grad()
def plot_latent_map(vae: VAE, x: torch.Tensor, labels: torch.Tensor, path: str) -> str:
    """Posterior means E_q[z|x] of test digits projected on their first two principal axes."""
    mu = vae.posterior_mean(x).cpu()
    centred = mu - mu.mean(0)
    _, s, v = torch.linalg.svd(centred, full_matrices=False)
    coords = centred @ v[:2].T
    explained = (s[:2] ** 2 / (s**2).sum()).tolist()
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    points = ax.scatter(coords[:, 0], coords[:, 1], c=labels.cpu(), cmap="tab10", s=6, alpha=0.8, vmin=-0.5, vmax=9.5)
    cbar = fig.colorbar(points, ax=ax, ticks=range(10))
    cbar.set_label("digit label")
    ax.set(
        xlabel=f"PC 1 of posterior means ({100 * explained[0]:.0f}% of variance)",
        ylabel=f"PC 2 ({100 * explained[1]:.0f}% of variance)",
        title=rf"Posterior means $\mu(x)$ of {len(x)} test digits (z_dim={vae.z_dim}, PCA)",
    )
    ax.grid(alpha=0.3)
    return _save(fig, path)


@torch.no_grad()
def plot_interpolation(vae: VAE, x: torch.Tensor, labels: torch.Tensor, path: str, steps: int = 10) -> str:
    """Decoder means along straight lines between the posterior means of pairs of test digits."""
    pairs = _distinct_label_pairs(labels, 5)
    mu = vae.posterior_mean(x[[i for pair in pairs for i in pair]])
    t = torch.linspace(0, 1, steps, device=mu.device)[:, None]
    rows = [vae.decoded_mean(mu[2 * k] * (1 - t) + mu[2 * k + 1] * t) for k in range(len(pairs))]
    fig, ax = plt.subplots(figsize=(9, 1.0 * len(pairs) + 0.8))
    ax.imshow(_image_grid(torch.cat(rows), nrow=steps), cmap="gray", vmin=0, vmax=1)
    ax.set_yticks([15 + 30 * i for i in range(len(pairs))])
    ax.set_yticklabels([f"{int(labels[a])} → {int(labels[b])}" for a, b in pairs])
    ax.set_xticks([15 + 30 * i for i in range(steps)])
    ax.set_xticklabels([f"{v:.2f}" for v in torch.linspace(0, 1, steps).tolist()])
    ax.set_xlabel(r"$t$ in $z = (1-t)\,\mu(x_a) + t\,\mu(x_b)$")
    ax.set_title("Latent interpolation between test digits (decoder means)")
    return _save(fig, path)


def _distinct_label_pairs(labels: torch.Tensor, n: int) -> Sequence[tuple]:
    """The first test digit of labels (0,1), (2,3), ...: pairs of different digits."""
    first = {}
    for i, label in enumerate(labels.tolist()):
        first.setdefault(label, i)
    digits = sorted(first)
    return [(first[digits[2 * k]], first[digits[2 * k + 1]]) for k in range(min(n, len(digits) // 2))]


def plot_all(vae: VAE, history: List[Dict[str, float]], x: torch.Tensor, labels: torch.Tensor, out: str) -> Dict[str, str]:
    """Every figure of a run into directory ``out``; returns name -> path."""
    vae.eval()
    paths = {
        "elbo_curves": plot_elbo_curves(history, os.path.join(out, "elbo_curves.png")),
        "reconstructions": plot_reconstructions(vae, x, os.path.join(out, "reconstructions.png")),
        "prior_samples": plot_prior_samples(vae, os.path.join(out, "prior_samples.png")),
        "latent_map": plot_latent_map(vae, x[:2000], labels[:2000], os.path.join(out, "latent_map.png")),
        "interpolation": plot_interpolation(vae, x, labels, os.path.join(out, "interpolation.png")),
    }
    vae.train()
    return paths
