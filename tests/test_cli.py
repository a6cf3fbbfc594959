"""The examples' command line, in process: every error as one line naming the flag, the exit codes
of an interrupt, and argparse's usage errors. (The examples themselves run as subprocesses in
tests/test_example.py and tests/test_bad_input.py, out of the fast loop.)"""

import signal

import pytest
import torch

from pyro_vae.cli import OneLineParser, flags_for, run
from pyro_vae.errors import ConfigError, TrainingInterrupted


def stderr_of(capsys, main, argv=()):
    code = run(main, list(argv))
    return code, capsys.readouterr().err


def raising(err):
    def main(argv):
        raise err

    return main


def test_a_library_error_becomes_one_line_naming_the_flag_of_its_setting(capsys):
    code, err = stderr_of(capsys, raising(ConfigError("lr must be a positive number, got -1", settings=("lr",))))
    assert code == 2
    assert err == "error: lr must be a positive number, got -1 (command line: --lr)\n"


def test_the_flag_is_found_through_an_error_that_pyro_re_raised():
    inner = ConfigError("z_dim must be a positive integer", settings=("z_dim",))
    outer = ValueError("Error while computing log_prob")
    outer.__cause__ = inner
    assert flags_for(outer) == ["--z-dim"]
    assert flags_for(ValueError("no settings")) == []


def test_an_unexpected_error_says_so_in_one_line_and_debug_adds_the_traceback(capsys):
    code, err = stderr_of(capsys, raising(KeyError("multi\nline")))
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: unexpected error (please report with --debug): KeyError: ")
    code, err = stderr_of(capsys, raising(KeyError("x")), ["--debug"])
    assert code == 2 and "Traceback" in err and err.rstrip().splitlines()[-1].startswith("error: unexpected error")


def test_running_out_of_memory_names_the_size_and_what_to_shrink(capsys):
    oom = RuntimeError(
        "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to allocate 3221225472 bytes."
    )
    code, err = stderr_of(capsys, raising(oom))
    assert code == 2
    assert err == (
        "error: out of memory (3.0 GiB asked for at once); make the run smaller: fewer or narrower layers, "
        "a smaller z_dim or batch_size\n"
    )


def test_interrupts_exit_130_or_143_saying_what_was_kept(capsys):
    code, err = stderr_of(capsys, raising(KeyboardInterrupt()))
    assert code == 130 and err.startswith("interrupted; nothing more was written")
    stop = TrainingInterrupted(signal.SIGTERM, 3, 7, "runs/x/checkpoint.pt")
    code, err = stderr_of(capsys, raising(stop))
    assert code == 143 == stop.exit_code
    assert err == "interrupted at epoch 3, step 7; checkpoint at runs/x/checkpoint.pt: rerun with --resume\n"
    code, err = stderr_of(capsys, raising(TrainingInterrupted(signal.SIGINT, 1, 0, None)))
    assert code == 130 and err == "interrupted at epoch 1, step 0; no checkpoint\n"


def test_a_usage_error_is_one_line_with_exit_code_2(capsys):
    parser = OneLineParser(prog="mnist_svi.py")
    parser.add_argument("--epochs", type=int)
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--epochs", "many"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err == "error: argument --epochs: invalid int value: 'many'; see mnist_svi.py --help\n"


def test_a_successful_main_returns_its_code_and_prints_nothing(capsys):
    assert stderr_of(capsys, lambda argv: int(torch.tensor(argv == ["a"]).item()), ["a"]) == (1, "")
