"""The figure of the CVAE (:mod:`pyro_vae.models.cvae`): for the same inputs, the baseline's one
completion next to several of the CVAE's.

matplotlib is imported here only, so that training never pays its start-up.
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple, cast

import torch
from torch import nn

from pyro_vae.files import save_figure
from pyro_vae.models.cvae import CVAE, Baseline, join_quadrants, split_quadrants


def plot_completions(
    nets: Dict[Tuple[str, int], nn.Module],
    images: torch.Tensor,
    quadrants: Sequence[int],
    path: str,
    digits: Sequence[int] = (0, 1, 2),
    num_samples: int = 4,
    seed: int = 0,
) -> str:
    """One panel per input-quadrant count; a row per test digit: the input (missing quadrants
    shaded), the truth, the baseline's completion, ``num_samples`` CVAE completions (each from
    its own :math:`z \\sim p(z|x)`). Completions are mean pixels, drawn into the missing quadrants."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picks = images[list(digits)]
    cols = 3 + num_samples
    fig, axes = plt.subplots(
        len(quadrants), 1, figsize=(1.1 * cols + 0.4, 1.15 * len(digits) * len(quadrants) + 0.6), squeeze=False
    )
    for ax, k in zip(axes[:, 0], quadrants):
        x, y = split_quadrants(picks, k)
        shown = join_quadrants(x, torch.full_like(y, 0.25), k)  # missing quadrants shaded
        torch.manual_seed(seed)
        # nets holds a CVAE under ("cvae", k) and a Baseline under ("baseline", k)
        samples = cast(CVAE, nets[("cvae", k)]).complete(x, num_samples)  # [S, B, missing]
        cells = [shown, picks, join_quadrants(x, cast(Baseline, nets[("baseline", k)]).complete(x), k)]
        cells += [join_quadrants(x, samples[s], k) for s in range(num_samples)]
        grid = torch.stack(cells, 1).reshape(len(digits), cols, 28, 28).permute(0, 2, 1, 3)
        ax.imshow(grid.reshape(len(digits) * 28, cols * 28), cmap="gray_r", vmin=0, vmax=1)
        ax.set_xticks(
            [14 + 28 * j for j in range(cols)],
            ["input", "truth", "baseline"] + [f"CVAE {s + 1}" for s in range(num_samples)],
            fontsize=8,
        )
        ax.set_yticks([])
        ax.set_ylabel(f"{k} quadrant{'s' if k > 1 else ''}")
        for j in range(1, cols):
            ax.axvline(28 * j - 0.5, color="tab:blue", lw=0.5)
    fig.suptitle("completions: the baseline's mean vs samples of the CVAE", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return path


__all__ = ["plot_completions"]
