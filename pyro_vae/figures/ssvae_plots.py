"""The figures of M2 (:class:`pyro_vae.models.ssvae.SSVAE`): test accuracy per epoch, style transfer
(one digit's style z decoded with every label, Kingma et al.'s Figure 1) and samples per class.

matplotlib is imported here only, so that training never pays its start-up.
"""

from __future__ import annotations

from typing import Any, Dict

import torch

from pyro_vae.files import save_figure
from pyro_vae.models.ssvae import SSVAE


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid(images: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """``[rows * cols, 784]`` to one ``[rows * 28, cols * 28]`` image, row-major."""
    return images.reshape(rows, cols, 28, 28).permute(0, 2, 1, 3).reshape(rows * 28, cols * 28)


def plot_accuracy(runs: Dict[str, Dict[str, Any]], path: str) -> str:
    """Test accuracy of :math:`q(y|x)` after every epoch, one line per label count; with held-out
    validation images, their accuracy dashed and the epoch it picks starred; where the weights
    were averaged (``SSConfig.average_from``), the last weights' test accuracy dotted."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for count, run in runs.items():
        epochs = [r["epoch"] for r in run["history"]]
        (line,) = ax.plot(
            epochs, [r["test_accuracy"] for r in run["history"]], marker="o", ms=3, label=f"{count} labels"
        )
        if run.get("best_epoch") is not None:
            ax.plot(epochs, [r["validation_accuracy"] for r in run["history"]], ls="--", color=line.get_color(), lw=1)
            best = run["history"][run["best_epoch"] - 1]
            ax.plot([best["epoch"]], [best["test_accuracy"]], marker="*", ms=12, color=line.get_color(), mec="k")
        last = [r for r in run["history"] if "averaged_epochs" in r]
        if last:  # from --average-from on the line is the mean's; the last weights' own accuracy dotted
            ax.plot(
                [r["epoch"] for r in last],
                [r["unaveraged_test_accuracy"] for r in last],
                ls=":",
                color=line.get_color(),
                lw=1,
            )
    held_out = any(run.get("best_epoch") is not None for run in runs.values())
    averaging = any("averaged_epochs" in r for run in runs.values() for r in run["history"])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{'' if held_out else 'test '}accuracy of q(y|x)")
    ax.grid(alpha=0.3)
    ax.legend()
    titles = ["solid: test digits; dashed: held-out training digits; star: the epoch they pick"] if held_out else []
    if averaging:
        titles.append("dotted: the last weights' test accuracy where the solid line is their running mean's")
    if titles:
        ax.set_title("\n".join(titles), fontsize=7 if averaging else 8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return path


def plot_style_transfer(vae: SSVAE, images: torch.Tensor, labels: torch.Tensor, path: str, rows: int = 6) -> str:
    r"""Left column: test digits (one per class, the first ``rows`` classes); then each digit's
    style :math:`z = \mathbb E_q[z|x, y]` (its own label given) decoded with each label 0-9."""
    plt = _plt()
    picks = [int((labels == c).nonzero()[0]) for c in range(rows)]
    x, y = images[picks], labels[picks]
    z = vae.style_code((x > 0.5).float(), y)
    cells = []
    for i in range(rows):
        cells.append(x[i])
        cells.append(vae.decoded_mean(z[i].expand(vae.num_classes, -1), torch.arange(vae.num_classes)))
    grid = _grid(torch.cat([c.reshape(-1, 784) for c in cells]), rows, vae.num_classes + 1)
    fig, ax = plt.subplots(figsize=(7.5, 0.68 * rows + 0.5))
    ax.imshow(grid, cmap="gray_r", vmin=0, vmax=1)
    ax.set_xticks([14 + 28 * j for j in range(vae.num_classes + 1)], ["input"] + [str(c) for c in range(10)])
    ax.set_yticks([])
    ax.set_title("style transfer: each input's z decoded with every label")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return path


def plot_class_samples(vae: SSVAE, path: str, per_class: int = 10, seed: int = 0) -> str:
    r"""Row ``c``: :math:`\mathbb E[x|y=c, z]` for ``per_class`` draws :math:`z \sim p(z)`, the same
    draws in every row (a column is one style across the classes)."""
    plt = _plt()
    z = torch.randn(per_class, vae.z_dim, generator=torch.Generator().manual_seed(seed))
    rows = [vae.decoded_mean(z, torch.full((per_class,), c, dtype=torch.long)) for c in range(vae.num_classes)]
    grid = _grid(torch.cat(rows), vae.num_classes, per_class)
    fig, ax = plt.subplots(figsize=(6, 6.3))
    ax.imshow(grid, cmap="gray_r", vmin=0, vmax=1)
    ax.set_yticks([14 + 28 * c for c in range(vae.num_classes)], [str(c) for c in range(vae.num_classes)])
    ax.set_xticks([])
    ax.set_ylabel("label y")
    ax.set_title("samples per class: z ~ p(z), the same z in each column")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return path
