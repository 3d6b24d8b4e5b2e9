"""`bpmt.engine.progress`: a tqdm bar on a terminal, a few plain lines in logs and pipes."""

from __future__ import annotations

import io
import re

import pytest
from tqdm import tqdm

from bpmt.engine.progress import ProgressLog, progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_about_twenty_lines_per_job_plus_one_at_the_end():
    stream = io.StringIO()
    with progress(300, desc="phase1", unit="step", stream=stream) as bar:
        assert isinstance(bar, ProgressLog)
        for step in range(300):
            bar.update(1)
            bar.set_postfix(loss=0.31)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 20 and "\r" not in stream.getvalue()
    assert re.fullmatch(r"phase1: 15/300 steps, loss 0\.31, [\d.,e+]+ step/s", lines[0]), lines[0]
    assert lines[-1].startswith("phase1: 300/300 steps, loss 0.31, ")
    assert [int(line.split()[1].split("/")[0]) for line in lines] == list(range(15, 300, 15)) + [300]


def test_log_lines_every_n_units_with_a_resumed_start_and_big_updates():
    stream = io.StringIO()
    bar = progress(100, desc="finetune", unit="step", initial=40, every=25, stream=stream)
    bar.update(5)                                            # 45: no line
    bar.update(30)                                           # 75: crosses 50 and 75, one line
    bar.update(25)                                           # 100: the end, written by close
    assert len(stream.getvalue().splitlines()) == 1
    assert stream.getvalue().startswith("finetune: 75/100 steps")
    bar.close()
    bar.close()                                              # closing twice writes once
    assert [line.split(",")[0] for line in stream.getvalue().splitlines()] == ["finetune: 75/100 steps",
                                                                               "finetune: 100/100 steps"]


@pytest.mark.parametrize("total", [0, 1, 7])
def test_small_jobs_write_at_least_the_final_line(total):
    stream = io.StringIO()
    with progress(total, desc="reading", unit="seq", stream=stream) as bar:
        for _ in range(total):
            bar.update()
    lines = stream.getvalue().splitlines()
    assert 1 <= len(lines) <= max(total, 1) and lines[-1].startswith(f"reading: {total}/{total} seqs")


def test_a_terminal_gets_a_tqdm_bar_and_disable_shows_nothing():
    terminal = Terminal()
    bar = progress(10, desc="embedding", unit="chunk", stream=terminal, leave=False)
    assert isinstance(bar, tqdm) and bar.fp is not None
    bar.update(3)
    bar.set_postfix(loss=0.5)
    bar.close()
    assert "embedding" in terminal.getvalue()
    quiet = io.StringIO()
    with progress(10, desc="poses", unit="frame", stream=quiet, disable=True) as bar:
        bar.update(10)
    assert quiet.getvalue() == ""
