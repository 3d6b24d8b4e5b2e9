"""Rendering sequences: PNG grids and GIFs, part colours, faded joints, the `show` command."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from PIL import Image

from bpmt.cli import main
from bpmt.data.gait3d import read_gait3d
from bpmt.data.synth import iter_synthetic, write_synthetic
from bpmt.render import (
    BONES, DPI, FADED_ALPHA, FOOTER_IN, HEADER_IN, PANEL_HEIGHT_IN, PANEL_WIDTH_IN, draw_pose, render_sequence,
    sample_frame_indices,
)
from bpmt.skeleton import DEFAULT_PARTITION, PARENTS, part_colors


@pytest.fixture(scope="module")
def walker():
    return next(iter_synthetic(1, 1, seed=0))


def _expected_size(panels: int) -> tuple[int, int]:
    columns, rows = min(panels, 8), -(-panels // 8)
    return (round(columns * PANEL_WIDTH_IN * DPI), round((rows * PANEL_HEIGHT_IN + HEADER_IN + FOOTER_IN) * DPI))


def _has_colour(image: Image.Image, colour: str, tolerance: int = 30) -> bool:
    pixels = np.asarray(image.convert("RGB"), dtype=np.int64)
    target = np.array([round(255 * c) for c in to_rgb(colour)])
    return bool((np.abs(pixels - target).max(axis=-1) <= tolerance).any())


def _check_png(path, panels: int) -> None:
    assert path.stat().st_size > 1000
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == _expected_size(panels)
        for colour in part_colors(DEFAULT_PARTITION).values():
            assert _has_colour(image, colour), f"part colour {colour} missing"


def test_sample_frame_indices():
    assert sample_frame_indices(100, 8).tolist() == [0, 14, 28, 42, 57, 71, 85, 99]
    assert sample_frame_indices(5, 8).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        sample_frame_indices(10, 0)


def test_bones_follow_parents_once():
    assert len(BONES) == 16                     # 17 joints, the nose-shoulder bone named from both ends
    assert {frozenset(b) for b in BONES} == {frozenset((j, p)) for j, p in enumerate(PARENTS)}


def test_png_grid_of_a_synthetic_walker(tmp_path, walker):
    out = render_sequence(walker, tmp_path / "walker.png")
    _check_png(out, 8)


def test_png_grid_of_a_real_sequence(tmp_path, gait3d_root):
    sequence = read_gait3d(gait3d_root, ids=["0000"])[0][0]
    out = render_sequence(sequence, tmp_path / "real.png", frames=12)
    _check_png(out, 12)


def test_short_sequence_and_missing_crop_sizes(tmp_path, walker):
    short = dataclasses.replace(walker, keypoints=walker.keypoints[:3], frames=walker.frames[:3],
                                crop_sizes=np.zeros((3, 2), dtype=np.float32))   # pose pickles carry no crop sizes
    out = render_sequence(short, tmp_path / "short.png", partition="limb_roots")
    with Image.open(out) as image:
        assert image.size == _expected_size(3)


def test_gif(tmp_path, walker):
    out = render_sequence(walker, tmp_path / "walker.gif", frames=6)
    with Image.open(out) as image:
        assert image.format == "GIF" and image.n_frames == 6


def test_low_confidence_joints_are_faded():
    ax = Figure().add_subplot()
    xy = np.random.default_rng(0).random((17, 2))
    confidence = np.full(17, 0.9)
    confidence[9] = 0.1                                          # left wrist
    draw_pose(ax, xy, confidence, DEFAULT_PARTITION, part_colors(DEFAULT_PARTITION))
    bone_alpha = ax.collections[0].get_colors()[:, 3]
    faded = [i for i, (child, parent) in enumerate(BONES) if 9 in (child, parent)]
    assert np.allclose(bone_alpha[faded], FADED_ALPHA)
    assert np.allclose(np.delete(bone_alpha, faded), 1.0)
    joint_alpha = ax.collections[1].get_facecolors()[:, 3]
    assert joint_alpha[9] == pytest.approx(FADED_ALPHA) and joint_alpha[0] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("show"), 2, 2, seed=0)


def test_cli_show(tmp_path, synth_root, capsys):
    name = sorted(p.parent.parent.name + "-" + p.parent.name + "-" + p.name
                  for p in synth_root.glob("*/*/*"))[0]
    out = tmp_path / "shown.png"
    assert main(["show", str(synth_root), "--sequence", name, "--out", str(out), "--frames", "4"]) == 0
    assert name in capsys.readouterr().out
    with Image.open(out) as image:
        assert image.size == _expected_size(4)


def test_cli_show_unknown_sequence(tmp_path, synth_root, capsys):
    assert main(["show", str(synth_root), "--sequence", "9999-camid0_videoid0-seq0",
                 "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "no sequence named '9999-camid0_videoid0-seq0'" in err and "0000-camid" in err
    assert not (tmp_path / "x.png").exists()


def test_cli_show_unknown_format(tmp_path, synth_root, capsys):
    name = next(iter_synthetic(1, 1, seed=0)).name
    assert main(["show", str(synth_root), "--sequence", name, "--out", str(tmp_path / "x.unknown")]) == 2
    assert "image format" in capsys.readouterr().err
