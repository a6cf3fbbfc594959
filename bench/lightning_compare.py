#!/usr/bin/env python
"""pyro_vae's Trainer beside PyTorch Lightning (``pyro_vae.training.lightning.SVIModule``), one VAE.

Both train the default :class:`pyro_vae.VAE` (784-400-20, Bernoulli) on the same fixed-binarized
MNIST training images, batch 128, Adam (fused, lr 1e-3), Pyro's validation off in the steps and
the param-store registration skipped in both, so that what differs is the loop around the step:

* **seconds per epoch**: one training pass over the images, timed from the pass's first step to
  its last (``Trainer.train_epoch``; Lightning's ``on_train_epoch_start``/``on_train_epoch_end``),
  in interleaved rounds; Lightning's start-up per ``fit`` call is reported beside it. Lightning
  reads the data through a ``DataLoader(TensorDataset(x), batch_size, shuffle=True)``, the way
  its users feed it; a pass of that loader alone, and of the Trainer's indexing of the tensors
  alone, are timed too;
* **resume**: on 6,400 images (50 steps an epoch), a run of 2 epochs straight against the same
  run stopped after epoch 1 and resumed from its checkpoint, and stopped at step 25 of epoch 2
  and resumed, each in new objects as a new process would build them (with Lightning, after
  ``seed_everything(0)`` again, as a script does at its start): the largest difference of any
  weight from the straight run.

    python bench/lightning_compare.py --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import allocator  # noqa: E402
import lightning  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402
from report import save  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from pyro_vae import VAE, Trainer, binarize, load_mnist  # noqa: E402
from pyro_vae.errors import TrainingInterrupted  # noqa: E402
from pyro_vae.training import Callback  # noqa: E402
from pyro_vae.training.lightning import SVIModule  # noqa: E402

BATCH = 128


def new_vae(seed: int = 0) -> VAE:
    pyro.clear_param_store()
    torch.manual_seed(seed)
    return VAE()


def lightning_trainer(max_epochs: int, callbacks=()) -> lightning.Trainer:
    return lightning.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=list(callbacks),
    )


class EpochTimer(lightning.Callback):
    def on_train_epoch_start(self, trainer, module):
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module):
        self.seconds = time.perf_counter() - self.start


def loader(x: torch.Tensor) -> DataLoader:
    return DataLoader(TensorDataset(x), batch_size=BATCH, shuffle=True)


def speed(x: torch.Tensor, repeats: int) -> dict:
    trainer = Trainer(new_vae(), seed=0, binarize="none")
    module = SVIModule(new_vae(), validate=False)
    times = {"pyro_vae": [], "lightning": [], "lightning_startup": [], "dataloader_alone": [], "indexing_alone": []}
    for r in range(repeats):

        def ours():
            start = time.perf_counter()
            trainer.train_epoch(x, BATCH)
            times["pyro_vae"].append(time.perf_counter() - start)

        def theirs():
            timer = EpochTimer()
            start = time.perf_counter()
            lightning_trainer(1, [timer]).fit(module, loader(x))
            times["lightning"].append(timer.seconds)
            times["lightning_startup"].append(time.perf_counter() - start - timer.seconds)

        def data_alone():  # what reading the batches costs each, without any step
            start = time.perf_counter()
            for _ in loader(x):
                pass
            times["dataloader_alone"].append(time.perf_counter() - start)
            start = time.perf_counter()
            for idx in torch.randperm(len(x)).split(BATCH):
                x[idx]
            times["indexing_alone"].append(time.perf_counter() - start)

        for run in (ours, theirs, data_alone) if r % 2 == 0 else (data_alone, theirs, ours):
            run()
        print(
            f"round {r + 1}: pyro_vae {times['pyro_vae'][-1]:.2f} s, lightning {times['lightning'][-1]:.2f} s "
            f"(+ {times['lightning_startup'][-1]:.2f} s start-up)",
            flush=True,
        )
    steps = -(-len(x) // BATCH)
    out = {k: {"median": statistics.median(v), "min": min(v), "max": max(v)} for k, v in times.items()}
    out["ms_per_step"] = {k: 1000 * out[k]["median"] / steps for k in ("pyro_vae", "lightning")}
    out["ratio"] = out["lightning"]["median"] / out["pyro_vae"]["median"]
    return out


def max_difference(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


class StopAt(Callback):
    def on_step_end(self, trainer, step, loss):
        if trainer.epoch == 1 and step == 24:
            trainer.stop.request(2)


class LightningStopAt(lightning.Callback):
    def __init__(self, path):
        self.path = path

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 24:
            trainer.save_checkpoint(self.path)
            trainer.should_stop = True


def resume_ours(x: torch.Tensor, folder: str) -> dict:
    def run(epochs, resume=None, checkpoint=None, callbacks=()):
        vae = new_vae()
        trainer = Trainer(vae, seed=0, binarize="none")
        if resume:
            trainer.resume(resume)
        try:
            trainer.fit(x, None, epochs, BATCH, checkpoint=checkpoint, progress=False, log=None, callbacks=callbacks)
        except TrainingInterrupted:
            pass
        return {k: v.clone() for k, v in vae.state_dict().items()}

    straight = run(2)
    boundary, mid = os.path.join(folder, "ours_boundary.pt"), os.path.join(folder, "ours_mid.pt")
    run(1, checkpoint=boundary)
    run(2, checkpoint=mid, callbacks=[StopAt()])
    return {
        "epoch_boundary": max_difference(straight, run(2, resume=boundary)),
        "mid_epoch": max_difference(straight, run(2, resume=mid)),
    }


def resume_lightning(x: torch.Tensor, folder: str) -> dict:
    def run(epochs, ckpt_path=None, save_to=None, callbacks=()):
        lightning.seed_everything(0, verbose=False)
        vae = new_vae()
        module = SVIModule(vae, validate=False)
        trainer = lightning_trainer(epochs, callbacks)
        trainer.fit(module, loader(x), ckpt_path=ckpt_path)
        if save_to:
            trainer.save_checkpoint(save_to)
        return {k: v.clone() for k, v in vae.state_dict().items()}

    straight = run(2)
    boundary, mid = os.path.join(folder, "lightning_boundary.ckpt"), os.path.join(folder, "lightning_mid.ckpt")
    run(1, save_to=boundary)
    run(2, callbacks=[LightningStopAt(mid)])
    return {
        "epoch_boundary": max_difference(straight, run(2, ckpt_path=boundary)),
        "mid_epoch": max_difference(straight, run(2, ckpt_path=mid)),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="full MNIST (default: $PYRO_VAE_DATA, cache, embedded)")
    p.add_argument("--repeats", type=int, default=5)
    allocator.add_option(p)
    p.add_argument("--json", default=os.path.join(HERE, "results", "lightning.json"))
    args = p.parse_args()
    setting = allocator.apply(args.allocator)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")  # the DataLoader's single process
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    data = load_mnist(args.data_dir, verbose=False)
    x = binarize(data.train_images, "fixed")
    result = {
        "command": " ".join(["python bench/lightning_compare.py", *sys.argv[1:]]),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "pyro": pyro.__version__,
        "allocator": setting,
        "train_images": len(x),
        "batch_size": BATCH,
    }
    result["speed"] = speed(x, args.repeats)
    with tempfile.TemporaryDirectory() as folder:
        small = x[:6400]
        result["resume_max_abs_difference"] = {
            "pyro_vae": resume_ours(small, folder),
            "lightning": resume_lightning(small, folder),
        }
    save(args.json, result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
