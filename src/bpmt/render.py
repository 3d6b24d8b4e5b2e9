"""Drawing pose sequences with each body part in its own colour: a PNG grid of frames or a GIF.

Every frame is drawn in its own person crop scaled to unit height and centred horizontally, so a
walker fills the same space in every panel whatever the crop size. Bones come from
`skeleton.PARENTS` and take the colour of the child joint's part; joints below `MIN_CONFIDENCE`
are drawn faded. Only matplotlib's Agg canvas is used, never pyplot, so no window or global
backend is touched.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle

from .data.sequence import Sequence
from .errors import BPMTError
from .skeleton import NUM_JOINTS, PARENTS, Partition, get_partition, part_colors, validate_partition
from .text import plural

MIN_CONFIDENCE = 0.3
FADED_ALPHA = 0.2
PANEL_WIDTH_IN, PANEL_HEIGHT_IN = 1.5, 2.6
COLUMNS = 8
HEADER_IN, FOOTER_IN = 0.4, 0.5        # sequence name above, part legend below
DPI = 100
GIF_FPS = 25.0                          # Gait3D's frame rate: a GIF of every frame plays in real time



def _undirected_bones() -> tuple[tuple[int, int], ...]:
    """Each `(child, PARENTS[child])` bone once: the nose and the shoulders name each other."""
    seen: set[frozenset[int]] = set()
    bones = []
    for child, parent in enumerate(PARENTS):
        if child != parent and frozenset((child, parent)) not in seen:
            seen.add(frozenset((child, parent)))
            bones.append((child, parent))
    return tuple(bones)


BONES = _undirected_bones()


def sample_frame_indices(length: int, count: int) -> np.ndarray:
    """`count` indices spread evenly over `length` frames (all frames when there are fewer)."""
    if count < 1:
        raise ValueError(f"need at least one frame to draw, got {count}")
    if length <= count:
        return np.arange(length)
    return np.unique(np.linspace(0, length - 1, count).round().astype(np.int64))


def unit_crop(keypoints: np.ndarray, crop_sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`(T, 17, 3)` crop pixels -> (x, y in crop heights centred on the crop's middle `(T, 17, 2)`,
    crop aspect w/h `(T,)`).

    Without crop sizes (pose pickles store none) the confident joints' box plus 10% stands in.
    """
    xy = np.asarray(keypoints[..., :2], dtype=np.float64)
    sizes = np.asarray(crop_sizes, dtype=np.float64)
    width, height = sizes[:, 0].copy(), sizes[:, 1].copy()
    left = np.zeros(len(xy))
    top = np.zeros(len(xy))
    missing = (width <= 0) | (height <= 0)
    if missing.any():
        confident = keypoints[missing, :, 2] >= MIN_CONFIDENCE                  # (M, 17)
        confident[~confident.any(axis=1)] = True
        pts = xy[missing]
        lo = np.where(confident[..., None], pts, np.inf).min(axis=1)            # (M, 2)
        hi = np.where(confident[..., None], pts, -np.inf).max(axis=1)
        box_height = np.maximum(hi[:, 1] - lo[:, 1], 1e-6)
        pad = 0.1 * box_height
        left[missing], top[missing] = lo[:, 0] - pad, lo[:, 1] - pad
        width[missing] = hi[:, 0] - lo[:, 0] + 2 * pad
        height[missing] = box_height + 2 * pad
    x = (xy[..., 0] - left[:, None] - width[:, None] / 2) / height[:, None]
    y = (xy[..., 1] - top[:, None]) / height[:, None]
    return np.stack([x, y], axis=-1), width / height


def draw_pose(ax, xy: np.ndarray, confidence: np.ndarray, partition: Partition,
              colors: dict[str, str]) -> None:
    """Draw one frame's `(17, 2)` joints and bones on `ax`, coloured by part, faded where unsure."""
    joint_color = np.empty((NUM_JOINTS, 4))
    for part, joints in partition.items():
        joint_color[list(joints)] = to_rgba(colors[part])
    alpha = np.where(confidence >= MIN_CONFIDENCE, 1.0, FADED_ALPHA)
    bone_color = joint_color[[child for child, _ in BONES]].copy()
    bone_color[:, 3] = [min(alpha[child], alpha[parent]) for child, parent in BONES]
    segments = [[xy[child], xy[parent]] for child, parent in BONES]
    ax.add_collection(LineCollection(segments, colors=bone_color, linewidths=2.2, capstyle="round"))
    point_color = joint_color.copy()
    point_color[:, 3] = alpha
    ax.scatter(xy[:, 0], xy[:, 1], s=14, c=point_color, edgecolors="none", zorder=3)


def _setup_panel(ax, half_width: float, aspect: float) -> None:
    ax.set_xlim(-half_width, half_width)
    ax.set_ylim(1.0, 0.0)                                                        # image y points down
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.add_patch(_crop_outline(aspect))


def _crop_outline(aspect: float) -> Rectangle:
    return Rectangle((-aspect / 2, 0.0), aspect, 1.0, fill=False, edgecolor="#bbbbbb", linewidth=0.8)


def _legend(fig: Figure, partition: Partition, colors: dict[str, str], columns: int, fontsize: float) -> None:
    handles = [Line2D([], [], color=colors[part], marker="o", linewidth=2.2, label=part.replace("_", " "))
               for part in partition]
    fig.legend(handles=handles, loc="lower center", ncol=min(columns, len(handles)), frameon=False,
               fontsize=fontsize)


def _resolve_partition(partition: str | Partition) -> Partition:
    if isinstance(partition, str):
        partition = get_partition(partition)
    validate_partition(partition)
    return partition


def render_grid(sequence: Sequence, out: str | os.PathLike, frames: int = 8,
                partition: str | Partition = "default") -> Path:
    """Save `frames` evenly sampled frames of `sequence` side by side (8 per row) to `out` (PNG, ...)."""
    partition = _resolve_partition(partition)
    colors = part_colors(partition)
    picked = sample_frame_indices(len(sequence), frames)
    xy, aspect = unit_crop(sequence.keypoints[picked], sequence.crop_sizes[picked])
    half_width = max(0.5 * float(aspect.max()), float(np.abs(xy[..., 0]).max()), 0.25) * 1.05

    columns = min(len(picked), COLUMNS)
    rows = math.ceil(len(picked) / COLUMNS)
    width_in = columns * PANEL_WIDTH_IN
    height_in = rows * PANEL_HEIGHT_IN + HEADER_IN + FOOTER_IN
    fig = Figure(figsize=(width_in, height_in), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.01, right=0.99, top=1 - HEADER_IN / height_in, bottom=FOOTER_IN / height_in,
                        wspace=0.05, hspace=0.15)
    axes = fig.subplots(rows, columns, squeeze=False)
    for slot, ax in enumerate(axes.ravel()):
        if slot >= len(picked):
            ax.set_axis_off()
            continue
        _setup_panel(ax, half_width, float(aspect[slot]))
        draw_pose(ax, xy[slot], sequence.keypoints[picked[slot], :, 2], partition, colors)
        ax.set_title(f"frame {int(sequence.frames[picked[slot]])}", fontsize=8, pad=2)
    fig.suptitle(f"{sequence.name}  ({plural(len(sequence), 'frame')})", fontsize=10, y=1 - 0.08 / height_in, va="top")
    _legend(fig, partition, colors, columns=len(partition), fontsize=9)
    out = Path(out)
    fig.savefig(out, dpi=DPI)
    return out


def render_gif(sequence: Sequence, out: str | os.PathLike, frames: int | None = None,
               partition: str | Partition = "default") -> Path:
    """Save an animated GIF of `sequence` (all frames, or `frames` evenly sampled) playing in real time."""
    from matplotlib.animation import PillowWriter, writers

    if not writers.is_available("pillow"):
        raise BPMTError("writing a GIF needs the 'pillow' package (pip install pillow); "
                        "or give --out a .png file for a still grid")
    partition = _resolve_partition(partition)
    colors = part_colors(partition)
    picked = sample_frame_indices(len(sequence), frames or len(sequence))
    xy, aspect = unit_crop(sequence.keypoints[picked], sequence.crop_sizes[picked])
    half_width = max(0.5 * float(aspect.max()), float(np.abs(xy[..., 0]).max()), 0.25) * 1.05

    height_in = PANEL_HEIGHT_IN + HEADER_IN + FOOTER_IN
    fig = Figure(figsize=(2 * PANEL_WIDTH_IN, height_in), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=0.02, right=0.98, top=1 - HEADER_IN / height_in, bottom=FOOTER_IN / height_in)
    ax = fig.add_subplot()
    _legend(fig, partition, colors, columns=3, fontsize=7)
    fps = GIF_FPS * len(picked) / len(sequence)
    out = Path(out)
    writer = PillowWriter(fps=fps)
    with writer.saving(fig, str(out), DPI):
        for slot, index in enumerate(picked):
            ax.clear()
            _setup_panel(ax, half_width, float(aspect[slot]))
            draw_pose(ax, xy[slot], sequence.keypoints[index, :, 2], partition, colors)
            ax.set_title(f"{sequence.name}\nframe {int(sequence.frames[index])}", fontsize=8)
            writer.grab_frame()
    return out


def render_sequence(sequence: Sequence, out: str | os.PathLike, frames: int | None = None,
                    partition: str | Partition = "default") -> Path:
    """A GIF when `out` ends in `.gif`, else a still grid of `frames` (default 8) in `out`'s image format."""
    out = Path(out)
    suffix = out.suffix.lower().lstrip(".")
    if suffix == "gif":
        return render_gif(sequence, out, frames, partition)
    supported = FigureCanvasAgg(Figure()).get_supported_filetypes()
    if suffix not in supported:
        raise BPMTError(f"{out}: cannot tell the image format from the suffix; use .png, .gif, "
                        f"or one of {', '.join(sorted(supported))}")
    return render_grid(sequence, out, frames or 8, partition)
