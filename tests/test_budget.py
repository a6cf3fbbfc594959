"""Training for a budget of minutes (pyro_vae.training.budget): the rule's numbers against their
formulas, one rule for every budget, and the clock of TimeBudget on a fake clock (no timing)."""

import math

import pytest
import torch

from pyro_vae import VAE, ConfigError, Trainer
from pyro_vae.training import budget as budget_module
from pyro_vae.training.budget import BudgetSchedule, TimeBudget


def test_the_rule_sets_rate_weight_and_batch_from_the_fraction_spent():
    hour = BudgetSchedule(
        60.0,
        lr=1e-3,
        lr_final=5e-5,
        warmup_minutes=3.0,
        warmup_fraction=0.3,
        batch_size=256,
        batch_doublings=(0.5, 0.8),
    )
    assert hour.lr_at(0.0) == pytest.approx(1e-3) and hour.lr_at(1.0) == pytest.approx(5e-5)
    assert hour.lr_at(0.5) == pytest.approx((1e-3 + 5e-5) / 2)
    assert hour.lr_at(0.25) == pytest.approx(5e-5 + 0.5 * (1e-3 - 5e-5) * (1 + math.cos(math.pi / 4)))
    assert hour.lr_at(2.0) == pytest.approx(5e-5)  # clamped past the end
    assert hour.warmup == pytest.approx(0.05)  # 3 of 60 minutes
    assert hour.beta_at(0.025) == pytest.approx(0.5) and hour.beta_at(0.05) == 1.0 and hour.beta_at(0.9) == 1.0
    assert [hour.batch_size_at(f) for f in (0.0, 0.49, 0.5, 0.79, 0.8, 1.0)] == [256, 256, 512, 512, 1024, 1024]
    # the same rule for ten minutes: the warm-up keeps its minutes up to the cap
    ten = BudgetSchedule(10.0)
    assert ten.warmup == pytest.approx(min(ten.warmup_fraction, ten.warmup_minutes / 10))
    two = BudgetSchedule(2.0, warmup_minutes=3.0, warmup_fraction=0.3)
    assert two.warmup == pytest.approx(0.3)  # capped: a short budget is not all warm-up
    assert BudgetSchedule(5.0, warmup_minutes=0.0).beta_at(0.0) == 1.0  # no warm-up


@pytest.mark.parametrize(
    "settings, named",
    [
        ({"minutes": 0.0}, "minutes"),
        ({"minutes": 10.0, "lr_final": 1e-2}, "lr_final"),
        ({"minutes": 10.0, "warmup_fraction": 1.5}, "warmup_fraction"),
        ({"minutes": 10.0, "batch_doublings": (0.5, 1.0)}, "batch_doublings"),
        ({"minutes": 10.0, "batch_size": 0}, "batch_size"),
    ],
)
def test_a_bad_schedule_is_refused_by_name(settings, named):
    with pytest.raises(ConfigError, match=named):
        BudgetSchedule(**settings)


class FakeClock:
    """time.perf_counter for the budget module: advanced by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_time_budget_counts_training_passes_only_sets_the_schedule_and_stops_fit(mnist, tmp_path, monkeypatch):
    """Each step takes 'one second' of the fake clock and each evaluation an hour that must not
    count; fit stops at the first epoch end past the budget, the rate and weight in use are the
    rule's at the fraction spent, and a resumed run continues the budget from the checkpoint."""
    clock = FakeClock()
    monkeypatch.setattr(budget_module.time, "perf_counter", clock)
    x = mnist.train_images[:200]
    steps_per_epoch = 4  # 200 images in batches of 50

    def tick(trainer, step, loss):
        clock.now += 1.0

    class Tick(budget_module.Callback):
        on_step_end = staticmethod(tick)

        def on_evaluate(self, trainer, metrics, test_x):
            clock.now += 3600.0  # evaluation: not training time

    schedule = BudgetSchedule(
        minutes=10 / 60,
        lr=1e-3,
        lr_final=1e-4,
        warmup_minutes=4 / 60,
        warmup_fraction=0.5,
        batch_size=50,
        batch_doublings=(),
    )
    seen = []

    class Watch(budget_module.Callback):
        def on_step_end(self, trainer, step, loss):
            seen.append((trainer.optimizer.param_groups[0]["lr"], trainer.current_beta))

    budget = TimeBudget(schedule, every=1)
    trainer = Trainer(VAE(z_dim=2, hidden_dims=(16,)))
    trainer.fit(
        x,
        mnist.test_images[:50],
        epochs=100,
        batch_size=50,
        progress=False,
        log=None,
        callbacks=[Tick(), budget, Watch()],
        checkpoint=str(tmp_path / "c.pt"),
    )
    assert trainer.epoch == math.ceil(10 / steps_per_epoch)  # 3 epochs: 12 s of steps >= 10 s
    assert budget.minutes() == pytest.approx(12 / 60)  # the three hours of evaluation not counted
    assert [r["train_minutes"] for r in trainer.history] == pytest.approx([4 / 60, 8 / 60, 12 / 60])
    # after each step (one more second) the rule is applied at the seconds spent: step i sets it for i + 1 s
    lr, beta = seen[4]  # after the 5th step: 5 of 10 s
    assert lr == pytest.approx(schedule.lr_at(5 / 10)) and beta == 1.0
    assert seen[1][1] == pytest.approx(schedule.beta_at(2 / 10))  # 2 of the 4 warm-up seconds: 0.5
    assert seen[1][1] == pytest.approx(0.5)

    resumed_budget = TimeBudget(schedule)
    resumed = Trainer(VAE(z_dim=2, hidden_dims=(16,)))
    resumed.resume(str(tmp_path / "c.pt"))
    resumed.fit(x, None, epochs=100, batch_size=50, progress=False, log=None, callbacks=[resumed_budget])
    assert resumed.epoch == 3 and resumed_budget.minutes() == pytest.approx(12 / 60)  # spent: no more epochs
    with torch.no_grad():
        for a, b in zip(trainer.program.module.parameters(), resumed.program.module.parameters()):
            assert torch.equal(a, b)


def test_the_final_phase_switches_the_objective_by_name(mnist, monkeypatch):
    """From final_from of the budget on, the trainer optimizes the named objective (here the IWAE
    bound with K = 3): Objective.set_elbo, checked against the program like any objective."""
    from pyro_vae.inference.objectives import IWAE_ELBO

    clock = FakeClock()
    monkeypatch.setattr(budget_module.time, "perf_counter", clock)
    losses = []

    class Tick(budget_module.Callback):
        def on_step_end(self, trainer, step, loss):
            clock.now += 1.0
            losses.append(type(trainer.loss).__name__)

    schedule = BudgetSchedule(
        minutes=8 / 60,
        warmup_minutes=0.0,
        batch_size=50,
        batch_doublings=(),
        final_objective="iwae",
        final_particles=3,
        final_from=0.5,
    )
    trainer = Trainer(VAE(z_dim=2, hidden_dims=(16,)))
    trainer.fit(
        mnist.train_images[:200],
        None,
        epochs=100,
        batch_size=50,
        progress=False,
        log=None,
        callbacks=[Tick(), TimeBudget(schedule, every=1)],
    )
    assert isinstance(trainer.loss, IWAE_ELBO) and trainer.loss.num_particles == 3
    assert losses[:4] == ["Trace_ELBO"] * 4 and set(losses[4:]) == {"IWAE_ELBO"}  # switched after 4 of 8 s
    with pytest.raises(ConfigError, match="unknown objective"):
        BudgetSchedule(10.0, final_objective="iwea")
    with pytest.raises(ConfigError, match="final_from"):
        BudgetSchedule(10.0, final_objective="iwae", final_from=1.0)


def _averaged_fit(mnist, clock, epochs, checkpoint, resume=None):
    """A budget of 6 epochs of 4 one-second steps, averaging from half of it: a trainer, its
    budget and the weights at each epoch's end."""

    class Tick(budget_module.Callback):
        def on_step_end(self, trainer, step, loss):
            clock.now += 1.0

    ends = []

    class Ends(budget_module.Callback):
        def on_pass_end(self, trainer):
            ends.append([p.detach().clone() for p in trainer.program.module.parameters()])

    schedule = BudgetSchedule(minutes=24 / 60, warmup_minutes=0.0, batch_size=50, batch_doublings=(), average_from=0.5)
    budget = TimeBudget(schedule, every=1)
    torch.manual_seed(0)  # the same initial weights in every run
    trainer = Trainer(VAE(z_dim=2, hidden_dims=(16,)))
    if resume is not None:
        trainer.resume(resume)
    trainer.fit(
        mnist.train_images[:200],
        None,
        epochs=epochs,
        batch_size=50,
        progress=False,
        log=None,
        callbacks=[Tick(), budget, Ends()],
        checkpoint=checkpoint,
    )
    return trainer, budget, ends


def test_the_budget_averages_the_weights_of_the_epochs_past_average_from(mnist, tmp_path, monkeypatch):
    """With average_from = 0.5 of a 24-second budget of 4-second epochs, the epochs ending at 12, 16,
    20 and 24 s are averaged: load_average puts exactly their mean into the model, while training
    went on from the last weights. A run resumed from epoch 4 (two epochs in the mean) ends with
    the same mean, and asking for the mean before the start is refused by name."""
    clock = FakeClock()
    monkeypatch.setattr(budget_module.time, "perf_counter", clock)
    trainer, budget, ends = _averaged_fit(mnist, clock, 100, str(tmp_path / "whole.pt"))
    assert trainer.epoch == 6 and budget.averaged_epochs() == 4
    last = [p.detach().clone() for p in trainer.program.module.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(last, ends[-1]))  # training ends on its last weights
    budget.load_average(trainer)
    for i, param in enumerate(trainer.program.module.parameters()):
        expected = torch.stack([end[i] for end in ends[2:]]).mean(0)  # epochs 3 to 6
        assert torch.allclose(param, expected, atol=1e-6, rtol=1e-6)

    clock.now = 100.0
    _, early, _ = _averaged_fit(mnist, clock, 2, str(tmp_path / "early.pt"))  # 8 of 24 s: before the start
    with pytest.raises(ConfigError, match="average_from"):
        early.load_average(trainer)

    clock.now = 100.0
    _averaged_fit(mnist, clock, 4, str(tmp_path / "part.pt"))  # stops at epoch 4: two epochs averaged
    resumed, resumed_budget, _ = _averaged_fit(
        mnist, clock, 100, str(tmp_path / "part.pt"), resume=str(tmp_path / "part.pt")
    )
    assert resumed.epoch == 6 and resumed_budget.averaged_epochs() == 4
    resumed_budget.load_average(resumed)
    for a, b in zip(trainer.program.module.parameters(), resumed.program.module.parameters()):
        assert torch.equal(a, b)


def test_average_from_outside_the_budget_is_refused_by_name():
    with pytest.raises(ConfigError, match="average_from"):
        BudgetSchedule(10.0, average_from=1.0)


@pytest.mark.integration
def test_bench_best_nll_runs_the_rule_for_a_tiny_budget(tmp_path):
    """bench/best_nll.py end to end on the embedded sample, held-out mode: the record carries the
    command, commit, rule, per-epoch rows and an evaluated curve (the script is not otherwise run
    by the suite, and once broke unseen)."""
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    record = tmp_path / "record.json"
    env = {k: v for k, v in os.environ.items() if k != "PYRO_VAE_DATA"}
    run = subprocess.run(
        [
            sys.executable,
            os.path.join(root, "bench", "best_nll.py"),
            "--minutes",
            "0.05",
            "--validation",
            "500",
            "--hidden",
            "32",
            "--z-dim",
            "4",
            "--eval-samples",
            "8",
            "--curve-samples",
            "4",
            "--average-from",
            "0.5",
            "--json",
            str(record),
            "--checkpoint",
            str(tmp_path / "c.pt"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(record.read_text())
    assert result["evaluated_on"] == "validation" and result["num_test"] == 500
    assert result["schedule"]["minutes"] == 0.05 and result["schedule"]["warmup"] == pytest.approx(0.3)
    assert result["commit"] and result["epochs"] and result["epochs"][-1]["train_minutes"] >= 0.05
    last = result["curve"][-1]
    assert last["nll_k8"] > 0 and last["nll_k4"] > 0 and last["test_elbo"] < -last["nll_k8"] + 1.0
    # averaged: the last weights scored first, then the mean of the epochs past half the budget
    assert last["averaged_epochs"] >= 1 and last["last_weights"]["nll_k4"] > 0
    assert result["schedule"]["average_from"] == 0.5
