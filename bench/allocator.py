"""Keep the C allocator from billing page faults to whichever program allocates next.

glibc's ``malloc`` serves large blocks (above ``M_MMAP_THRESHOLD``, dynamically 128 KiB to
32 MiB) with ``mmap`` and hands freed memory at the top of the heap back to the kernel once
it exceeds ``M_TRIM_THRESHOLD``. A program that allocates parameter-sized temporaries on
every step then touches fresh pages each time: the reference's default (single-tensor)
``torch.optim.Adam`` allocates three temporaries the size of each parameter per step, and
measured here it took 372 to 1,090 minor page faults per step and 4.2 to 6.2 ms instead of
3.5 ms at batch 128, depending only on what the process had allocated before. pyro_vae's
step (fused Adam) takes none either way.

So that the benchmarks compare computation, not allocator history, they raise both
thresholds (:func:`keep_freed_memory`) before timing anything, which makes the heap keep
what it has, and they report minor page faults per step (:func:`minor_faults`) so a reader
can see that nobody paid them. ``--allocator glibc-default`` leaves glibc as it is.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import resource

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 1 << 30) -> str:
    """Raise glibc's mmap and trim thresholds for this process; say what was done."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return "allocator left as is (no glibc mallopt here)"
    if mallopt(M_MMAP_THRESHOLD, mmap_threshold) != 1 or mallopt(M_TRIM_THRESHOLD, trim_threshold) != 1:
        return "allocator left as is (mallopt refused the thresholds)"
    return f"glibc mallopt: M_MMAP_THRESHOLD={mmap_threshold >> 20} MiB, M_TRIM_THRESHOLD={trim_threshold >> 20} MiB"


def minor_faults() -> int:
    """Minor page faults of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def add_option(parser: argparse.ArgumentParser) -> None:
    """The benches' ``--allocator`` option."""
    parser.add_argument(
        "--allocator",
        choices=["kept", "glibc-default"],
        default="kept",
        help="keep freed memory in the heap (default) or leave glibc's thresholds",
    )


def apply(choice: str) -> str:
    """Act on ``--allocator``; return the setting in words, for the results."""
    return keep_freed_memory() if choice == "kept" else "glibc defaults"
