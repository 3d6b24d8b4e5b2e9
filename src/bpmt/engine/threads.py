"""How many CPU threads torch uses: the one place that decides (`engine.threads`).

Two processes that each run as many threads as there are cores oversubscribe the machine, and
OpenMP's busy-waiting threads then slow both far more than twofold (on 2 cores, phase 1 of
`configs/gait3d.yaml`: 9 s for 40 steps alone, 61 s each with two jobs). With half the cores each,
two jobs run side by side at nearly their solo speed (12 s each): the default (`engine.threads=0`)
takes half the cores, at least one. Set `engine.threads=N` to override (e.g. all cores when the
machine runs nothing else). `benchmarks/concurrency.py` measures both.
"""

from __future__ import annotations

import os


def auto_threads() -> int:
    """Half the CPU cores this process may use, at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:                                   # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // 2)


def configure_threads(threads: int = 0) -> int:
    """Set torch's intra-op threads to `threads` (0 = `auto_threads()`); -> the number set."""
    import torch

    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    count = threads or auto_threads()
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count
