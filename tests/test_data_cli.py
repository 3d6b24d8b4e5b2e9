"""`bpmt prepare` and `bpmt stats` on the real shipped subset and on bad data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bpmt.cli import main

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SPLIT = SHARED / "Gait3D.json"
FOLDS = SHARED / "gait3d-38ids-folds.json"

REAL = {"identities": 38, "sequences": 394, "frames": 55766}


def stats_json(capsys, *args) -> dict:
    assert main(["stats", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def counts(stats: dict) -> dict:
    return {k: stats[k] for k in REAL}


def run_error(capsys, argv) -> str:
    """Run a command that must fail cleanly; return its stderr."""
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") or "\nerror: " in err
    assert "Traceback" not in err
    return err


def test_stats_raw(capsys, gait3d_root):
    stats = stats_json(capsys, gait3d_root, "--workers", "2")
    assert counts(stats) == REAL
    assert stats["parse"]["files"] == 55766 and stats["parse"]["skipped"] == {}
    assert stats["frames_per_sequence"] == {"min": 25, "median": 104.5, "max": 489}


def test_stats_cache(capsys, gait3d_cache):
    stats = stats_json(capsys, gait3d_cache)
    assert counts(stats) == REAL and "parse" not in stats


def test_stats_text_output(capsys, gait3d_cache):
    assert main(["stats", str(gait3d_cache)]) == 0
    out = capsys.readouterr().out
    assert "identities:  38" in out and "sequences:   394" in out and "frames:      55766" in out


def test_ids_list_and_file(capsys, gait3d_cache, tmp_path):
    assert stats_json(capsys, gait3d_cache, "--ids", "0000,0001")["identities"] == 2
    fold = json.loads(FOLDS.read_text())["folds"][0]
    id_file = tmp_path / "ids.txt"
    id_file.write_text("# fold 0\n" + "\n".join(fold[:-1]) + f"\n{fold[-1]}  # last one\n")
    assert stats_json(capsys, gait3d_cache, "--ids", id_file)["identities"] == len(fold)


def test_sequence_selection(capsys, gait3d_cache, tmp_path):
    from bpmt.data.source import open_data

    names = open_data(gait3d_cache, ["0000", "0001"])[0].names
    kept = stats_json(capsys, gait3d_cache, "--ids", "0000,0001", "--seqs", ",".join(names[:3]))
    assert kept["sequences"] == 3
    drop = tmp_path / "drop.txt"
    drop.write_text("\n".join(names[:2]) + "\n")
    rest = stats_json(capsys, gait3d_cache, "--ids", "0000,0001", "--exclude-seqs", drop)
    assert rest["sequences"] == len(names) - 2
    err = run_error(capsys, ["stats", gait3d_cache, "--ids", "0000", "--seqs", names[-1]])
    assert "--seqs" in err and names[-1] in err           # a sequence of 0001 is not in --ids 0000
    err = run_error(capsys, ["stats", gait3d_cache, "--ids", "0000,0001", "--exclude-seqs", ",".join(names)])
    assert "leave no sequence" in err


def test_ids_on_raw_folder(capsys, gait3d_root):
    stats = stats_json(capsys, gait3d_root, "--ids", "0000,0001", "--workers", "1")
    assert stats["identities"] == 2 and stats["parse"]["sequences"] == stats["sequences"]


def test_split_train_keeps_all(capsys, gait3d_cache):
    assert counts(stats_json(capsys, gait3d_cache, "--split", SPLIT, "--subset", "train")) == REAL


def test_split_test_has_no_identities_here(capsys, gait3d_cache, gait3d_root):
    for data in (gait3d_cache, gait3d_root):
        err = run_error(capsys, ["stats", data, "--split", SPLIT, "--subset", "test"])
        assert "none of the 1000 requested identities" in err


@pytest.mark.parametrize("argv,message", [
    (["--subset", "train"], "--subset needs --split"),
    (["--split", SPLIT], "--split needs --subset"),
    (["--ids", "9999"], "none of the 1 requested identities"),
    (["--ids", "no/such/ids.txt"], "no such file"),
    (["--ids", "0000", "--split", SPLIT, "--subset", "test"], "none of the --ids identities is in TEST_SET"),
])
def test_subset_errors(capsys, gait3d_cache, argv, message):
    assert message in run_error(capsys, ["stats", gait3d_cache, *argv])


def test_missing_data_path(capsys, tmp_path):
    assert "no such file or folder" in run_error(capsys, ["stats", tmp_path / "nowhere", "--json"])


# ---------------------------------------------------------------------------------------------
# Bad data


@pytest.fixture
def bad_tree(tmp_path) -> tuple[Path, Path]:
    """A tiny tree built from two real sequences, one of its frame files broken."""
    root = tmp_path / "2D_Poses"
    good = "1,2," + ",".join(["1.5"] * 51)
    for seq, frames in (("seq0", (1, 2, 3)), ("seq1", (4, 5))):
        folder = root / "0001" / "camid1_videoid2" / seq
        folder.mkdir(parents=True)
        for f in frames:
            (folder / f"human_crop_f{f}.txt").write_text(good)
    bad = root / "0001" / "camid1_videoid2" / "seq1" / "human_crop_f5.txt"
    bad.write_text(good.replace("1.5", "oops", 1))
    past = os.stat(root).st_mtime - 3600   # so that a later change surely moves a folder's mtime
    for folder, _, _ in os.walk(root):
        os.utime(folder, (past, past))
    return root, bad


def test_bad_data_exit_code_and_message(capsys, bad_tree):
    root, bad = bad_tree
    err = run_error(capsys, ["stats", root, "--json"])
    assert f"{bad}: value 3 is not a number" in err
    err = run_error(capsys, ["prepare", "gait3d", root, "--out", root.parent / "c.cache"])
    assert str(bad) in err and not (root.parent / "c.cache").exists()


def test_on_error_skip_reports_count(capsys, bad_tree):
    root, bad = bad_tree
    stats = stats_json(capsys, root, "--on-error", "skip")
    assert stats["frames"] == 4 and stats["parse"]["skipped"] == {"value 3 is not a number: 'oops'": 1}
    assert main(["stats", str(root), "--on-error", "skip", "--workers", "1"]) == 0
    captured = capsys.readouterr()
    assert "skipped: 1 x value 3 is not a number" in captured.out
    assert "skipped" not in captured.err and captured.out.count(str(bad)) == 1   # said once, on stdout, naming the file


def test_on_error_skip_summary_is_printed_once(capsys, bad_tree, tmp_path):
    """However many files a command skips, it prints one summary line: not one per file, and not
    the same summary twice (stats used to warn on stderr and report on stdout)."""
    root, bad = bad_tree
    (bad.parent / "human_crop_f4.txt").write_text("1,2")                     # a second bad file
    commands = {"stats": ["stats", root],
                "prepare": ["prepare", "gait3d", root, "--out", tmp_path / "skipped.cache"],
                "show": ["show", root, "--sequence", "0001-camid1_videoid2-seq0", "--out", tmp_path / "seq.png"]}
    for name, argv in commands.items():
        assert main([*map(str, argv), "--on-error", "skip", "--workers", "1"]) == 0, name
        captured = capsys.readouterr()
        lines = [line for line in (captured.out + captured.err).splitlines() if "skipped" in line]
        assert len(lines) == 1, (name, lines)
        assert "value 3 is not a number" in lines[0] and "found 2" in lines[0], (name, lines)
        assert "(first: " in lines[0] and "human_crop_f" in lines[0], (name, lines)      # names a file


def test_prepare_then_stats(capsys, bad_tree, tmp_path):
    root, _ = bad_tree
    out = tmp_path / "prepared.cache"
    assert main(["prepare", "gait3d", str(root), "--out", str(out), "--on-error", "skip", "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "skipped" in printed
    assert stats_json(capsys, out)["frames"] == 4
    # Stale after a change to the source: a clean error, not a traceback.
    (root / "0001" / "camid1_videoid2" / "seq0" / "human_crop_f9.txt").write_text("1")
    assert "stale cache" in run_error(capsys, ["stats", out])


def test_prepare_refuses_non_cache_output(capsys, bad_tree, tmp_path):
    root, _ = bad_tree
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "file").write_text("x")
    assert "refusing to overwrite" in run_error(capsys, ["prepare", "gait3d", root, "--out", tmp_path / "keep",
                                                         "--on-error", "skip"])
