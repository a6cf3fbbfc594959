"""Data-parallel training on torch.distributed (gloo, 2 processes on this machine).

After two epochs, both ranks hold identical parameters, and they equal (to float
tolerance) one process trained on the same global minibatches, with shard r's latent
noise drawn from rank r's RNG stream (pyro_vae.training.distributed's docstring). The batch size
31 makes every shard uneven (16 + 15 rows, and 4 + 3 in the last batch), which the loss
weights must correct. Only rank 0 writes the checkpoint; the test ELBO is reduced.
"""

import os
import socket
import sys
import time

import pyro
import pytest
import torch
import torch.multiprocessing as mp
from test_user_model import TabularVAE, tabular

from pyro_vae import VAE, Trainer
from pyro_vae.data.images import binarize
from pyro_vae.errors import ConfigError, NonFiniteError
from pyro_vae.models.guides import DiagonalNormalGuide
from pyro_vae.models.plate import registration_skipped
from pyro_vae.rng import data_order_generator, latent_noise_seed
from pyro_vae.training import distributed

pytestmark = pytest.mark.integration  # runs whole programs, a browser or a docs build: out of the fast loop

ARCH = dict(z_dim=4, hidden_dims=(16,))
SEED, EPOCHS, BATCH, WORLD = 3, 2, 31, 2


def pixels(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 784, generator=torch.Generator().manual_seed(seed))


def _train(rank: int, out: str) -> None:
    import pyro_vae.training.trainer as train

    written = []
    save = train.save_checkpoint
    train.save_checkpoint = lambda state, path: (written.append(rank), save(state, path))
    pyro.set_rng_seed(SEED)
    trainer = Trainer(VAE(**ARCH), seed=SEED, distributed=True)
    trainer.fit(
        pixels(100, 0),
        pixels(21, 1),
        epochs=EPOCHS,
        batch_size=BATCH,
        checkpoint=os.path.join(out, "checkpoint.pt"),
        progress=False,
        log=lambda _: None,
    )
    torch.save(
        {"model": trainer.vae.state_dict(), "history": trainer.history, "written": written},
        os.path.join(out, f"rank{rank}.pt"),
    )


def _worker(rank: int, port: int, out: str, body=_train) -> None:
    """One rank: join the gloo group, run ``body(rank, out)``, leave the group."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        body(rank, out)  # returns before the group goes: its trainer is gone (distributed.shutdown)
    finally:
        distributed.shutdown()


def one_process_on_the_same_global_batches() -> dict:
    """The same training in one process: each global batch split as the ranks split it,
    shard r's noise from rank r's stream, the weighted losses averaged over the shards."""
    pyro.clear_param_store()
    pyro.set_rng_seed(SEED)
    trainer = Trainer(VAE(**ARCH), seed=SEED)
    x, num_data = pixels(100, 0), 100
    streams = [torch.manual_seed(latent_noise_seed(SEED, r)).get_state() for r in range(WORLD)]
    for epoch in range(1, EPOCHS + 1):
        generator = data_order_generator(SEED, epoch)
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


class GuideBrokenOnRank1(DiagonalNormalGuide):
    """The default guide, except that on rank 1 its scale turns NaN once, in the first step
    (the guide's first two calls are fit's checks of the guide)."""

    calls = 0

    def distribution(self, x):
        q = super().distribution(x)
        self.calls += 1
        if torch.distributed.get_rank() == 1 and self.calls == 3:
            return type(q.base_dist)(q.base_dist.loc, q.base_dist.scale * float("nan")).to_event(1)
        return q


def _train_validated(rank: int, out: str) -> None:
    guide = GuideBrokenOnRank1(784, ARCH["z_dim"], ARCH["hidden_dims"], "softplus", name="vae.encoder")
    trainer = Trainer(VAE(**ARCH, guide=guide), seed=SEED, distributed=True, validate=True)
    try:
        trainer.fit(pixels(100, 0), None, epochs=1, batch_size=BATCH, progress=False, log=lambda _: None)
        message = "no error"
    except NonFiniteError as err:
        message = f"epoch {err.epoch} step {err.step}: {err}"
    with open(os.path.join(out, f"rank{rank}.txt"), "w") as f:
        f.write(message)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without torch.distributed")
def test_a_step_refused_by_validation_on_one_rank_stops_every_rank(tmp_path):
    # Before: rank 1 raised alone, and rank 0 died in gloo ("Connection closed by peer").
    context = mp.start_processes(
        _worker, args=(free_port(), str(tmp_path), _train_validated), nprocs=WORLD, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + 120
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("the ranks did not finish: one of them is waiting for the other")
    rank0, rank1 = ((tmp_path / f"rank{r}.txt").read_text() for r in range(WORLD))
    print(rank0, rank1, sep="\n", file=sys.stderr)
    assert "the scale of Normal became NaN or infinite" in rank1, rank1
    assert "became NaN or infinite on 1 other process(es)" in rank0, rank0
    assert rank0.split(":")[0] == rank1.split(":")[0] == "epoch 1 step 0"  # the same step on both ranks
    # The NaN was injected once: replayed with the step's noise, the step is finite on both ranks.
    assert all("did not reproduce the failure here" in text for text in (rank0, rank1))


def test_distributed_without_a_process_group_names_the_launcher():
    with pytest.raises(ConfigError, match=r"^distributed=True needs a process group: launch the program with torchrun"):
        Trainer(VAE(**ARCH), distributed=True)


def _train_user_model(rank: int, out: str) -> None:
    """A user's own model and guide, arguments (x, c), trained by two ranks."""
    net, trainer = _user_trainer(distributed=True)
    x, c = tabular(100)
    trainer.fit(
        (x, c),
        tabular(21, seed=1),
        epochs=EPOCHS,
        batch_size=BATCH,
        checkpoint=os.path.join(out, "checkpoint.pt"),
        progress=False,
        log=None,
    )
    torch.save({"model": net.state_dict(), "history": trainer.history}, os.path.join(out, f"rank{rank}.pt"))


def _user_trainer(**settings):
    pyro.clear_param_store()
    torch.manual_seed(SEED)
    net = TabularVAE()
    return net, Trainer(net.model, net.guide, seed=SEED, lr=1e-2, **settings)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without torch.distributed")
def test_a_users_model_and_guide_train_on_two_gloo_processes_like_one_process(tmp_path):
    """Trainer(model, guide, distributed=True) on tuple data: both ranks end with the same
    weights, equal to one process stepping on the same global batches with rank r's noise on
    shard r, and report the same reduced held-out ELBO."""
    mp.start_processes(
        _worker, args=(free_port(), str(tmp_path), _train_user_model), nprocs=WORLD, join=True, start_method="spawn"
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    assert all(torch.equal(v, ranks[1]["model"][k]) for k, v in ranks[0]["model"].items())
    assert [h["test_elbo"] for h in ranks[0]["history"]] == [h["test_elbo"] for h in ranks[1]["history"]]
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["world_size"] == WORLD

    net, trainer = _user_trainer()
    (x, c), num_data = tabular(100), 100
    streams = [torch.manual_seed(latent_noise_seed(SEED, r)).get_state() for r in range(WORLD)]
    for epoch in range(1, EPOCHS + 1):
        for idx in torch.randperm(num_data, generator=data_order_generator(SEED, epoch)).split(BATCH):
            trainer.optimizer.zero_grad(set_to_none=True)
            for r in range(WORLD):
                rows = idx[r::WORLD]
                torch.set_rng_state(streams[r])
                with pyro.validation_enabled(False):
                    loss = trainer.loss_module(x[rows], c[rows], num_data=num_data) * (WORLD * len(rows) / len(idx))
                (loss / WORLD).backward()
                streams[r] = torch.get_rng_state()
            trainer.optimizer.step()
    for name, value in net.state_dict().items():
        assert torch.allclose(ranks[0]["model"][name], value, rtol=1e-4, atol=1e-6), name
