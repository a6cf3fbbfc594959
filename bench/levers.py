#!/usr/bin/env python
"""What each speed lever of pyro_vae's training step buys: the step timed with all levers
on, with each one turned off alone, and with all off (the pre-issue-5 path: pyro.infer.SVI,
one pyro.optim.Adam per parameter, validation at every step), in interleaved repeats.

Candidate levers that were measured and *not* kept are timed too: Pyro's JIT-compiled
ELBO and the mean-field (closed-form KL) ELBO as the objective. Two rows bound what is
possible: the plain-PyTorch reference of ``bench/reference.py`` (default Adam), and the
floor of eager Pyro: a minimal Pyro model and guide on the same networks, ``Trace_ELBO``
and fused Adam, with no checks, no validation and no registration at all.

The C allocator keeps freed memory, as in ``bench/step.py`` (``bench/allocator.py``).

    python bench/levers.py                      # batch 128 and 512
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from contextlib import ExitStack, contextmanager
from typing import Callable, Dict, Iterator

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, Trace_ELBO
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import allocator
from reference import ReferenceTrainer
from report import save
from step import NUM_DATA, time_per_call

from pyro_vae import VAE, Trainer, load_mnist
from pyro_vae.data.images import binarize
from pyro_vae.models import likelihoods, networks
from pyro_vae.models.likelihoods import BernoulliPixels


@contextmanager
def strided_encoder_heads() -> Iterator[None]:
    """The encoder as before: softplus on a strided half of the output."""
    original = networks.GaussianEncoder.forward

    def forward(self, x):
        loc, raw_scale = self.net(x).chunk(2, dim=-1)
        return loc, F.softplus(raw_scale) + 1e-6

    networks.GaussianEncoder.forward = forward
    try:
        yield
    finally:
        networks.GaussianEncoder.forward = original


@contextmanager
def torch_bernoulli() -> Iterator[None]:
    """The likelihood as before: torch's Bernoulli, to_event(1)."""
    original = likelihoods.BernoulliLikelihood.__call__
    likelihoods.BernoulliLikelihood.__call__ = lambda self, logits: dist.Bernoulli(logits=logits).to_event(1)
    try:
        yield
    finally:
        likelihoods.BernoulliLikelihood.__call__ = original


def variants(batch: torch.Tensor) -> Dict[str, Callable[[], Callable[[], object]]]:
    """name -> (a context to run in, a builder of the step function)."""

    def trainer_step(adjust: Callable[[Trainer], None] = lambda trainer: None, **kwargs) -> Callable[[], object]:
        pyro.clear_param_store()
        trainer = Trainer(VAE(), **kwargs)
        adjust(trainer)
        return lambda: trainer.step(batch, NUM_DATA)

    def unfused(trainer: Trainer) -> None:
        trainer.step_fn.optimizer = torch.optim.Adam(trainer.vae.parameters(), lr=1e-3, foreach=False)

    def registered(trainer: Trainer) -> None:
        trainer.objective.skip_registration = False

    def svi() -> Callable[[], object]:
        pyro.clear_param_store()
        vae = VAE()
        engine = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
        return lambda: engine.step(batch, num_data=NUM_DATA)

    def minimal_pyro() -> Callable[[], object]:
        """Pyro's floor: the same networks in the smallest model and guide, no checks."""
        pyro.clear_param_store()
        vae = VAE()
        encoder, decoder, elbo = vae.encoder.encoder, vae.decoder, Trace_ELBO()
        optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3, fused=True)
        zero, one, index = torch.zeros(()), torch.ones(()), torch.arange(len(batch))

        def model(x):
            with pyro.plate("data", NUM_DATA, subsample=index):
                z = pyro.sample("z", dist.Normal(zero, one).expand([len(x), vae.z_dim]).to_event(1))
                pyro.sample("x", BernoulliPixels(decoder(z)), obs=x)

        def guide(x):
            with pyro.plate("data", NUM_DATA, subsample=index):
                pyro.sample("z", dist.Normal(*encoder(x)).to_event(1))

        def step() -> float:
            optimizer.zero_grad(set_to_none=True)
            with pyro.validation_enabled(False):
                loss = elbo.differentiable_loss(model, guide, batch)
            loss.backward()
            optimizer.step()
            return float(loss.detach())

        return step

    def reference() -> Callable[[], object]:
        trainer = ReferenceTrainer()
        return lambda: trainer.step(batch, NUM_DATA)

    return {
        "all levers": (None, trainer_step),
        "- fused Adam (single-tensor Adam)": (None, lambda: trainer_step(unfused)),
        "- validation off (validate=True)": (None, lambda: trainer_step(validate=True)),
        "- registration skipped": (None, lambda: trainer_step(registered)),
        "- contiguous encoder heads": (strided_encoder_heads, trainer_step),
        "- BernoulliPixels (torch Bernoulli)": (torch_bernoulli, trainer_step),
        "all off: SVI + Pyro Adam per parameter": ((strided_encoder_heads, torch_bernoulli), svi),
        "not kept: objective='jit_elbo'": (None, lambda: trainer_step(objective="jit_elbo")),
        "not kept: objective='meanfield'": (None, lambda: trainer_step(objective="meanfield")),
        "bound: minimal Pyro model/guide, fused Adam, no checks": (None, minimal_pyro),
        "bound: plain-PyTorch reference (default Adam)": (None, reference),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 512])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "levers.json"))
    allocator.add_option(p)
    args = p.parse_args()
    import warnings

    setting = allocator.apply(args.allocator)
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit.trace's deprecation
    torch.manual_seed(0)
    images = load_mnist(args.data_dir, verbose=False).train_images
    out = {
        "command": " ".join(["python bench/levers.py", *sys.argv[1:]]),
        "threads": torch.get_num_threads(),
        "allocator": setting,
        "rows": [],
    }
    for batch_size in args.batch_sizes:
        batch = binarize(images[:batch_size], "dynamic", torch.Generator().manual_seed(0))
        built = {}
        for name, (contexts, build) in variants(batch).items():
            contexts = contexts if isinstance(contexts, tuple) else (contexts,) if contexts else ()
            built[name] = (contexts, build())
        times = {name: [] for name in built}

        def run(name: str, calls: int, built: dict = built) -> float:
            contexts, fn = built[name]
            with ExitStack() as stack:
                for context in contexts:
                    stack.enter_context(context())
                return time_per_call(fn, calls)

        for name in built:
            run(name, 10)  # warm-up (and JIT compilation)
        names = list(built)
        for r in range(args.repeats):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                times[name].append(run(name, args.steps))
        base = statistics.median(times["all levers"])
        for name, t in times.items():
            row = {
                "batch_size": batch_size,
                "variant": name,
                "ms": statistics.median(t),
                "min": min(t),
                "max": max(t),
                "vs_all_levers": statistics.median(t) - base,
            }
            out["rows"].append(row)
            print(
                f"batch {batch_size:4d}  {name:42s} {row['ms']:6.2f} ms ({row['min']:.2f}-{row['max']:.2f})"
                f"  {row['vs_all_levers']:+.2f} ms",
                flush=True,
            )
    save(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
