"""examples/ss_vae.py and examples/cvae.py end to end, small: what they write, that --seed
fixes a run (initial weights included: two runs are identical), and M2's --validation."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration  # runs whole programs, a browser or a docs build: out of the fast loop

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(program, args, mnist_source, out):
    data = ["--data-dir", mnist_source] if mnist_source else []
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / program), *data, "--no-download", "--no-progress", "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, json.loads((out / "metrics.json").read_text())


def _without_seconds(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


def test_ss_vae_example_reports_the_validation_epoch_and_repeats_exactly(tmp_path, mnist_source):
    args = [
        "--labels",
        "100",
        "--train-size",
        "1000",
        "--test-size",
        "300",
        "--validation",
        "200",
        "--epochs",
        "3",
        "--z-dim",
        "8",
        "--hidden",
        "64",
    ]
    stdout, metrics = run("ss_vae.py", args, mnist_source, tmp_path / "a")
    _, again = run("ss_vae.py", args, mnist_source, tmp_path / "b")
    for name in ("accuracy.png", "style_transfer.png", "class_samples.png", "checkpoint_100.pt"):
        assert os.path.getsize(tmp_path / "a" / name) > 1000, name
    got = metrics["runs"]["100"]
    history = got["history"]
    assert _without_seconds(history) == _without_seconds(again["runs"]["100"]["history"])
    assert len(history) == 3 and got["steps"] == 21  # (1000 - 200 held out - 100 labelled) / 100 a step, 3 epochs
    assert max(got["labelled_indices"]) < 800 and got["labelled_class_counts"] == [10] * 10
    scores = [r["validation_accuracy"] for r in history]
    assert got["best_epoch"] == got["reported_epoch"] == scores.index(max(scores)) + 1
    assert got["test_accuracy"] == history[got["best_epoch"] - 1]["test_accuracy"] > 0.2
    assert metrics["config"]["alpha"] == pytest.approx(0.1 * 800)
    assert f"at epoch {got['best_epoch']}, the best of 3 on 200 held-out images" in stdout
    # Another label count into the same --out adds its row; the first run's stays, with its settings.
    more = [
        "--labels",
        "50",
        "--train-size",
        "1000",
        "--test-size",
        "300",
        "--validation",
        "200",
        "--epochs",
        "1",
        "--z-dim",
        "8",
        "--hidden",
        "64",
        "--binarize",
        "none",  # and Pyro's grey targets,
        "--shift-labelled",
        "1",
    ]  # the labelled digits shifted
    stdout, record = run("ss_vae.py", more, mnist_source, tmp_path / "a")
    assert record["runs"]["100"] == metrics["runs"]["100"] and record["runs"]["100"]["settings"]["labels"] == [100]
    assert record["runs"]["50"]["settings"]["labels"] == [50] and len(record["runs"]["50"]["history"]) == 1
    assert (
        record["runs"]["50"]["settings"]["binarize"] == "none"
        and metrics["runs"]["100"]["settings"]["binarize"] == "dynamic"
    )
    assert record["runs"]["50"]["settings"]["shift_labelled"] == 1
    assert metrics["runs"]["100"]["settings"]["shift_labelled"] == 0
    assert record["figures_labels"] == 50 and list(record["runs"]) == ["50", "100"]
    assert re.search(r"^ +50 +[\d.]+ +1$", stdout, re.M)
    assert re.search(r"^ +100 +[\d.]+ +\d  \(an earlier run in this --out\)$", stdout, re.M)


def test_cvae_example_writes_its_table_and_repeats_exactly(tmp_path, mnist_source):
    args = [
        "--quadrants",
        "2",
        "--train-size",
        "512",
        "--test-size",
        "100",
        "--epochs",
        "1",
        "--z-dim",
        "4",
        "--hidden",
        "32",
        "--samples",
        "8",
    ]
    stdout, metrics = run("cvae.py", args, mnist_source, tmp_path / "a")
    _, again = run("cvae.py", args, mnist_source, tmp_path / "b")
    assert os.path.getsize(tmp_path / "a" / "completions.png") > 1000
    row, same = metrics["table"]["2"], again["table"]["2"]
    for name in ("baseline", "cvae"):
        assert row[name]["test_nll"] == same[name]["test_nll"], name
        assert _without_seconds(row[name]["history"]) == _without_seconds(same[name]["history"]), name
        assert 0 < row[name]["test_nll"] < 400 * 0.7  # 392 missing pixels: far below log 2 nats each
    assert "2 quadrant(s), cvae: test -log p(y|x)" in stdout
    # Another quadrant count into the same --out adds its row; the first run's stays.
    stdout, record = run("cvae.py", ["--quadrants", "1", *args[2:]], mnist_source, tmp_path / "a")
    assert record["table"]["2"] == metrics["table"]["2"] and sorted(record["table"]) == ["1", "2"]
    assert record["figures_quadrants"] == [1]
    assert re.search(r"^ +2 .*  \(an earlier run in this --out\)$", stdout, re.M)
    assert not re.search(r"^ +1 .*earlier", stdout, re.M)
