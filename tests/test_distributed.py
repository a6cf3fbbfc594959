"""Data-parallel training on torch.distributed (gloo, 2 processes on this machine).

After two epochs, both ranks hold identical parameters, and they equal (to float
tolerance) one process trained on the same global minibatches, with shard r's latent
noise drawn from rank r's RNG stream (pyro_vae.distributed's docstring). The batch size
31 makes every shard uneven (16 + 15 rows, and 4 + 3 in the last batch), which the loss
weights must correct. Only rank 0 writes the checkpoint; the test ELBO is reduced.
"""

import os
import socket
import sys

import pyro
import pytest
import torch
import torch.multiprocessing as mp

from pyro_vae import Trainer, VAE, distributed
from pyro_vae.data import binarize
from pyro_vae.errors import ConfigError
from pyro_vae.plate import registration_skipped

ARCH = dict(z_dim=4, hidden_dims=(16,))
SEED, EPOCHS, BATCH, WORLD = 3, 2, 31, 2


def pixels(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 784, generator=torch.Generator().manual_seed(seed))


def _train(rank: int, out: str) -> None:
    import pyro_vae.train as train

    written = []
    save = train.save_checkpoint
    train.save_checkpoint = lambda state, path: (written.append(rank), save(state, path))
    pyro.set_rng_seed(SEED)
    trainer = Trainer(VAE(**ARCH), seed=SEED, distributed=True)
    trainer.fit(pixels(100, 0), pixels(21, 1), epochs=EPOCHS, batch_size=BATCH,
                checkpoint=os.path.join(out, "checkpoint.pt"), progress=False, log=lambda _: None)
    torch.save({"model": trainer.vae.state_dict(), "history": trainer.history, "written": written},
               os.path.join(out, f"rank{rank}.pt"))


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        _train(rank, out)  # returns before the group goes: its trainer is gone (distributed.shutdown)
    finally:
        distributed.shutdown()


def one_process_on_the_same_global_batches() -> dict:
    """The same training in one process: each global batch split as the ranks split it,
    shard r's noise from rank r's stream, the weighted losses averaged over the shards."""
    pyro.clear_param_store()
    pyro.set_rng_seed(SEED)
    trainer = Trainer(VAE(**ARCH), seed=SEED)
    x, num_data = pixels(100, 0), 100
    streams = [torch.manual_seed(SEED + 1_000_003 * r).get_state() for r in range(WORLD)]
    for epoch in range(1, EPOCHS + 1):
        generator = trainer._epoch_generator(epoch)
        order = torch.randperm(num_data, generator=generator)
        for idx in order.split(BATCH):
            batch = binarize(x[idx], "dynamic", generator)
            trainer.optimizer.zero_grad(set_to_none=True)
            for r in range(WORLD):
                shard = batch[r::WORLD]
                torch.set_rng_state(streams[r])
                with pyro.validation_enabled(False), registration_skipped():
                    loss = trainer.loss_module(shard, num_data=num_data) * (WORLD * len(shard) / len(idx))
                (loss / WORLD).backward()
                streams[r] = torch.get_rng_state()
            trainer.optimizer.step()
    return trainer.vae.state_dict()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without torch.distributed")
def test_two_gloo_processes_train_like_one_process_on_the_same_global_batches(tmp_path):
    mp.start_processes(_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True, start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for name, value in ranks[0]["model"].items():  # every rank holds the same parameters
        assert torch.equal(value, ranks[1]["model"][name]), name
    reference = one_process_on_the_same_global_batches()
    worst = max(float((ranks[0]["model"][k] - v).abs().max()) for k, v in reference.items())
    for name, value in reference.items():
        assert torch.allclose(ranks[0]["model"][name], value, rtol=1e-4, atol=1e-6), (name, worst)
    print(f"max |rank0 - one process| over all parameters: {worst:.3g}", file=sys.stderr)
    # Rank 0 alone wrote the checkpoint (after each epoch), and it records both ranks' RNG.
    assert ranks[0]["written"] == [0] * EPOCHS and ranks[1]["written"] == []
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["world_size"] == WORLD and len(state["rng_ranks"]) == WORLD
    # The metrics are reduced over ranks: both report the same test ELBO.
    assert [h["test_elbo"] for h in ranks[0]["history"]] == [h["test_elbo"] for h in ranks[1]["history"]]


def test_distributed_without_a_process_group_names_the_launcher():
    with pytest.raises(ConfigError, match=r"launch with torchrun .*--distributed"):
        Trainer(VAE(**ARCH), distributed=True)
