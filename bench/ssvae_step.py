#!/usr/bin/env python
"""M2's training steps (pyro_vae.models.ssvae): what picking the label's columns by index buys, and
what the convolutional classifier costs.

The unlabelled step enumerates the ten labels: the guide's q(z|x,y) and the decoder run on
``[10, B, .]``. Written as the network of the concatenation ``[one_hot(y), x]``, the
784-wide input layer of q(z|x,y) runs ten times per image; ``SSVAE._with_label`` runs it once
and adds the label's column of the first layer (the same function:
``tests/test_ssvae.py::test_the_label_columns_picked_by_index_equal_the_network_of_the_one_hot_concatenation``).
Both forms are timed in one process, interleaved, on the example's network (one hidden
layer of 500, z of 50), one thread by default.

Then the step with ``SSVAE(classifier="conv")`` (two strided convolutions before q(y|x)'s hidden
layer) against the default MLP classifier, again interleaved in one process.

    python bench/ssvae_step.py                  # batch 100, as examples/ss_vae.py trains
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from types import SimpleNamespace
from typing import Callable, Dict, List

import torch
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pyro.infer import config_enumerate
from report import save
from step import time_per_call

from pyro_vae.data.batches import Batch
from pyro_vae.models.ssvae import SSVAE, SemiSupervisedELBO
from pyro_vae.training.step import CheckedStep


def one_hot_concatenation(self: SSVAE, net: torch.nn.Sequential, y: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """The network of ``[one_hot(y), other]``, the one-hot formed and broadcast."""
    k = self.num_classes
    code = F.one_hot(y, k).to(other.dtype)
    shape = torch.broadcast_shapes(code.shape[:-1], other.shape[:-1])
    return net(torch.cat([code.expand(*shape, k), other.expand(*shape, other.shape[-1])], dim=-1))


def interleaved(
    variants: Dict[str, Callable[[], CheckedStep]],
    kinds: Dict[str, Callable[[CheckedStep], object]],
    repeats: int,
    calls: int,
) -> Dict[str, Dict[str, List[float]]]:
    """ms per call of every step kind under every variant, the variants interleaved in each repeat.

    ``variants[name]()`` puts the variant in place and returns the step to time, so a variant
    may be its own step or a patch of a shared one; machine drift hits all of them alike.
    """
    ms = {kind: {name: [] for name in variants} for kind in kinds}
    for _ in range(repeats):
        for name, prepare in variants.items():
            step = prepare()
            for kind, call in kinds.items():
                call(step)  # warm
                ms[kind][name].append(time_per_call(lambda call=call, step=step: call(step), calls))
    return ms


def ratios(ms: Dict[str, Dict[str, List[float]]], base: str, other: str, key: str) -> dict:
    """Median ms per variant and ``key`` = other / base, per step kind (the json's rows)."""
    rows = {}
    for kind, by_name in ms.items():
        med = {name: statistics.median(v) for name, v in by_name.items()}
        rows[kind] = {
            "ms": {name: {"median": m, "all": by_name[name]} for name, m in med.items()},
            key: med[other] / med[base],
        }
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--calls", type=int, default=10)
    p.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "ssvae_step.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.bernoulli(torch.full((args.batch_size, 784), 0.13), generator=torch.Generator().manual_seed(0))
    y = torch.arange(args.batch_size) % 10
    # A training step sums both parts (SemiSupervisedELBO); each is timed as a step of its own here,
    # its loss, gradients and Adam update, to see where the label's columns matter.
    kinds = {
        "unlabelled (y enumerated)": lambda step: step(Batch((x,), {}), 59900),
        "labelled": lambda step: step(Batch((x, y), {}), 100),
    }

    def checked_step(**settings: str) -> CheckedStep:
        torch.manual_seed(0)
        vae = SSVAE(**settings)
        elbo = SemiSupervisedELBO(vae, 100)

        def part(*args: torch.Tensor, num_data: int) -> torch.Tensor:
            if len(args) == 1:  # unlabelled: the label summed out
                return elbo.unlabelled_elbo.differentiable_loss(
                    vae.model, config_enumerate(vae.guide, "parallel"), *args, num_data=num_data
                )
            return elbo.labelled_elbo.differentiable_loss(
                vae.model, vae.guide, *args, num_data=num_data
            ) + elbo.labelled_elbo.differentiable_loss(
                vae.classifier_model, vae.classifier_guide, *args, num_data=num_data
            )

        objective = SimpleNamespace(skip_registration=True, elbo=elbo)
        return CheckedStep(objective, part, lr=1e-4, module=vae)

    # The label's columns: one step, its SSVAE._with_label swapped between the two forms.
    step, indexed = checked_step(), SSVAE._with_label

    def form(fn: Callable) -> Callable[[], CheckedStep]:
        def prepare() -> CheckedStep:
            SSVAE._with_label = fn
            return step

        return prepare

    try:
        ms = interleaved(
            {"label columns by index": form(indexed), "one-hot concatenation": form(one_hot_concatenation)},
            kinds,
            args.repeats,
            args.calls,
        )
    finally:
        SSVAE._with_label = indexed
    rows = ratios(ms, "label columns by index", "one-hot concatenation", "speedup")
    for kind, row in rows.items():
        med = {name: v["median"] for name, v in row["ms"].items()}
        print(
            f"{kind:>26}: {med['label columns by index']:.1f} ms by index, {med['one-hot concatenation']:.1f} ms "
            f"concatenated ({row['speedup']:.2f}x)"
        )
    epoch = (599 * sum(rows[k]["ms"]["label columns by index"]["median"] for k in rows)) / 1e3
    print(f"one epoch of examples/ss_vae.py at 100 labels (599 steps, each both parts): about {epoch:.0f} s of steps")

    # The classifier q(y|x): MLP against convolutional, each its own step.
    steps = {name: checked_step(classifier=name) for name in ("mlp", "conv")}
    ms = interleaved({name: (lambda s=s: s) for name, s in steps.items()}, kinds, args.repeats, args.calls)
    classifiers = ratios(ms, "mlp", "conv", "conv_over_mlp")
    for kind, row in classifiers.items():
        med = {name: v["median"] for name, v in row["ms"].items()}
        print(
            f"{kind:>26}: {med['mlp']:.1f} ms with the MLP classifier, {med['conv']:.1f} ms with the "
            f"convolutional one ({row['conv_over_mlp']:.2f}x)"
        )
    save(
        args.json,
        {
            "batch_size": args.batch_size,
            "threads": args.threads,
            "repeats": args.repeats,
            "calls": args.calls,
            "torch": torch.__version__,
            "steps": rows,
            "epoch_seconds_estimate": epoch,
            "classifier": classifiers,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
