"""What the command line says, whatever the command: `--version`, help texts, how counts read
(`text.plural`), and the CMC plot of `bpmt evaluate --plot`."""

from __future__ import annotations

from importlib import metadata

import pytest

import bpmt
from bpmt.cli import main, package_version
from bpmt.text import plural


def test_version_is_the_installed_package_version(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out.strip() == f"bpmt {metadata.version('bpmt')}"


def test_version_falls_back_to_the_source_tree(monkeypatch):
    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    assert package_version() == bpmt.__version__


def test_train_stage_help_says_what_each_choice_does(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())        # argparse wraps lines
    for choice in ("phase1 =", "phase2 =", "finetune =", "all = every stage of the config's `stages`, in order"):
        assert choice in text


def test_plural():
    assert plural(1, "sequence") == "1 sequence" and plural(0, "sequence") == "0 sequences"
    assert plural(2, "identity") == "2 identities" and plural(1, "identity") == "1 identity"
    assert plural(3, "query") == "3 queries" and plural(2, "day") == "2 days"
    assert plural(1, "frame file") == "1 frame file" and plural(2, "frame file") == "2 frame files"
    assert plural(12_345, "frame", grouped=True) == "12,345 frames" and plural(2, "man", "men") == "2 men"


def test_counts_of_one_read_in_the_singular(tmp_path, capsys):
    """`bpmt stats` on one sequence of one frame file says so (not "1 sequences, 1 frame files")."""
    folder = tmp_path / "2D_Poses" / "0001" / "camid1_videoid2" / "seq0"
    folder.mkdir(parents=True)
    (folder / "human_crop_f1.txt").write_text("100,200," + ",".join(["1.5"] * 51))
    (folder / "notes.txt").write_text("not a frame")
    assert main(["stats", str(tmp_path / "2D_Poses"), "--workers", "1"]) == 0
    assert "checked:     1 sequence, 1 frame file, 1 non-frame file ignored" in capsys.readouterr().out


def test_cmc_plot_has_whole_number_rank_ticks(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from bpmt.engine.plots import plot_cmc

    saved = []
    savefig = Figure.savefig

    def keep(figure, *args, **kwargs):
        saved.append(figure)
        return savefig(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    for ranks in (3, 20):
        out = plot_cmc([50.0 + i for i in range(ranks)], tmp_path / f"cmc{ranks}.png")
        assert out.read_bytes()[:4] == b"\x89PNG"
        axis = saved[-1].axes[0]
        low, high = axis.get_xlim()
        ticks = [t for t in axis.get_xticks() if low <= t <= high]
        assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks
