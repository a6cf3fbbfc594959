#!/usr/bin/env python
"""Train a VAE on MNIST with Pyro's SVI and write its figures, metrics and checkpoint.

    python examples/mnist_svi.py                      # embedded 5,000-digit sample, 100 epochs
    python examples/mnist_svi.py --data-dir ~/data    # full MNIST (downloaded there if missing)
    python examples/mnist_svi.py --resume             # continue the run in --out
    torchrun --nproc_per_node=2 examples/mnist_svi.py --distributed   # data-parallel, 2 processes

The story, top to bottom: the data; the model p(z) p(x|z) and the guide q(z|x) (one
pyro_vae.VAE, see docs/equations.md); SVI on the ELBO; the test ELBO and log-likelihood;
the figures. Errors print one line and exit with code 2 (--debug shows the traceback);
SIGINT and SIGTERM stop after the current step with a checkpoint, exiting 130 and 143.
With --distributed (under torchrun), every process trains on its shard of each minibatch,
gradients are averaged, and only rank 0 prints and writes.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

from tqdm.auto import tqdm

from pyro_vae import MetricsFile, TrainingInterrupted, cli
from pyro_vae.inference.evaluate import log_likelihood

#: the name this example's metrics.json carries: another program's record in --out is not replaced
PROGRAM = "mnist_svi.py"


def parse_args(argv=None):
    p = cli.OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_data_options(p)
    cli.add_model_options(p)
    cli.add_training_options(p)
    p.add_argument(
        "--eval-samples",
        type=int,
        default=0,
        help="K importance samples for the final test log-likelihood (e.g. 5000; default 0: skip)",
    )
    p.add_argument("--out", default="runs/mnist_svi", help="output directory (default runs/mnist_svi)")
    args = p.parse_args(argv)
    cli.check_options(args)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    out = cli.output_dir(args.out, ["checkpoint.pt"], args.resume, args.overwrite, program=PROGRAM)
    rank, device = cli.device_of(args)
    say = print if rank == 0 else (lambda *a, **k: None)

    # 1. The data: binarized MNIST digits x, flattened to 784 pixels.
    data = cli.load_data(args, verbose=rank == 0)
    data = data.subset(args.train_size, args.test_size)  # class-balanced, in the data's order
    say(f"data: {data.source}: {len(data.train_images)} train / {len(data.test_images)} test images", flush=True)

    # 2. The model p(z) p(x|z) and the guide q(z|x): two Pyro programs sharing the latent site "z".
    #    With --resume, both continue from OUT/checkpoint.pt, with its settings.
    vae, trainer = cli.training_run(args, device)
    model, guide = vae.model, vae.guide  # what pyro.infer.SVI(model, guide, Adam, Trace_ELBO()) would fit
    if args.resume:
        at = f" (+ {trainer.step_in_epoch} steps of epoch {trainer.epoch + 1})" if trainer.step_in_epoch else ""
        say(f"resumed from {trainer.last_checkpoint[0]} at epoch {trainer.epoch}{at}", flush=True)
        if trainer.lr_changed_on_resume is not None:
            old, new = trainer.lr_changed_on_resume
            say(f"learning rate changed on resume: {old:g} (checkpoint) -> {new:g} (--lr)", flush=True)
    say(cli.describe(vae, trainer, args.batch_size, args.epochs), flush=True)

    # 3. SVI: each step ascends the ELBO of a minibatch, scaled by N/B to the whole training set.
    config = {
        "model": "vae",
        **vae.config,
        **trainer.config.settings(),
        "batch_size": args.batch_size,
        "device": str(device),
        "processes": trainer.world_size,
    }
    metrics = MetricsFile(os.path.join(out, cli.RECORD), **cli.metrics_fields(PROGRAM, data, config))
    callbacks = [metrics]
    if args.tensorboard:
        from pyro_vae.training.tensorboard import TensorBoard

        callbacks.append(TensorBoard(args.tensorboard))
    start = time.perf_counter()
    with warnings.catch_warnings():
        # A NaN loss is reported (step, term, checkpoint) by NonFiniteError; Pyro's warning adds nothing.
        warnings.filterwarnings("ignore", message="Encountered NaN")
        try:
            trainer.fit(
                data.train_images,
                data.test_images,
                epochs=args.epochs,
                batch_size=args.batch_size,
                test_every=args.test_every,
                checkpoint=os.path.join(out, "checkpoint.pt"),
                progress=not args.no_progress,
                log=lambda line: print(line, flush=True),
                callbacks=callbacks,
            )
        except TrainingInterrupted as stop:
            if rank == 0:
                print(
                    f"interrupted at epoch {stop.epoch}, step {stop.step}; checkpoint at {stop.checkpoint}: "
                    f"rerun with --resume --out {out}",
                    file=sys.stderr,
                    flush=True,
                )
            return stop.exit_code
    wall = time.perf_counter() - start

    # 4. The test ELBO = E_q[log p(x|z)] - KL(q(z|x) || p(z)), per test digit (the last epoch's).
    test_x, test_y = trainer.test_data, data.test_labels
    final = trainer.last_evaluation or trainer.evaluate(test_x)  # every rank takes part: sums are reduced
    if rank != 0:
        return 0
    seconds = [r["seconds"] for r in trainer.history]
    metrics.update(
        epochs=trainer.epoch,
        test_elbo=final["elbo"],
        test_recon=final["recon"],
        test_kl=final["kl"],
        test_bits_per_dim=final.get("bits_per_dim"),
        train_elbo=trainer.history[-1]["train_elbo"],
        seconds_per_epoch=sum(seconds) / len(seconds),
        wall_seconds_this_run=wall,
        history=trainer.history,
    )

    # 5. log p(x) >= ELBO: the importance-sampled estimate with K samples from the guide.
    if args.eval_samples:
        start = time.perf_counter()
        with tqdm(
            total=len(test_x),
            desc=f"log p(x), K={args.eval_samples}",
            unit="img",
            disable=True if args.no_progress else None,
        ) as bar:
            ll = log_likelihood(
                model, guide, test_x, num_samples=args.eval_samples, progress=lambda done: bar.update(done - bar.n)
            )
        seconds = time.perf_counter() - start
        metrics.update(
            test_log_likelihood=-ll.nll(),
            test_log_likelihood_samples=args.eval_samples,
            test_log_likelihood_stderr=ll.nll_stderr(),
            test_log_likelihood_seconds=seconds,
        )
        print(
            f"test log-likelihood {-ll.nll():.3f} nats/datapoint (K={args.eval_samples} importance "
            f"samples, median ESS {ll.ess.median().item():.0f}, {seconds:.0f} s)"
        )

    # 6. Figures and the latent-space explorer (matplotlib's start-up is spent only here).
    from pyro_vae.figures.explorer import write_explorer
    from pyro_vae.figures.plots import plot_all

    figures, not_drawn = plot_all(vae, trainer.history, test_x, test_y, out)
    for name, reason in not_drawn.items():
        print(f"figure {name}.png not drawn: {reason}", flush=True)
    try:  # like a figure, the page must not cost the run its metrics
        explorer = os.path.basename(write_explorer(vae, test_x, test_y, os.path.join(out, "explorer.html")))
    except Exception as error:
        explorer = None
        print(f"explorer.html not written: {' '.join(str(error).split())}", flush=True)
    metrics.update(
        figures={k: os.path.basename(v) for k, v in figures.items()}, figures_not_drawn=not_drawn, explorer=explorer
    )
    bits = f"{final['bits_per_dim']:.4f} bits/dim" if "bits_per_dim" in final else "a density: no bits/dim"
    print(
        f"test ELBO {final['elbo']:.3f} nats/datapoint = recon {final['recon']:.3f} - KL {final['kl']:.3f} "
        f"({bits}); figures, {'explorer.html, ' if explorer else ''}metrics.json and "
        f"checkpoint.pt in {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
