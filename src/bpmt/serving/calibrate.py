"""Threshold calibration for open-set identification: the false-accept / false-reject trade-off.

From a labelled set of embeddings, each sequence plays two queries:

* genuine: an enrolled person. Score = distance to the nearest *other* sequence of its identity
  (identities with one sequence give none). Rejected (a false reject) when score > threshold.
* impostor: a stranger. The sequence's own identity is removed from the gallery; score = distance
  to the nearest sequence of any other identity. Accepted (a false accept) when score <= threshold.

FAR(t) = share of impostor scores <= t; FRR(t) = share of genuine scores > t. The threshold for a
target FAR is the largest t (rounded down to 6 significant digits) with FAR(t) <= target, which
gives the lowest FRR allowed. With n impostor scores the FAR moves in steps of 1/n: a target below
1/n can only be met by accepting no impostor at all.

Everything here is a pure function of scores, except `plot_tradeoff` (writes a PNG).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import DataError

TABLE_FARS = (0.0, 0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
DIGITS = 6


def open_set_scores(embeddings: np.ndarray, labels: Sequence[str], metric: str = "euc",
                    chunk_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """-> (genuine scores (G,), impostor scores (N,)) of `embeddings (N, E)` with identity `labels`."""
    from ..evaluation.metrics import pairwise_distances

    embeddings = np.asarray(embeddings, dtype=np.float64)
    labels = np.asarray(labels)
    if embeddings.ndim != 2 or len(embeddings) != len(labels):
        raise ValueError(f"embeddings {embeddings.shape} do not match {len(labels)} labels")
    if len(set(labels.tolist())) < 2:
        raise DataError("calibration needs at least 2 identities (impostor scores come from other identities)")
    genuine, impostor = [], []
    for start in range(0, len(embeddings), chunk_size):
        block = pairwise_distances(embeddings[start:start + chunk_size], embeddings, metric)     # (C, N)
        same = labels[start:start + chunk_size, None] == labels[None, :]                         # (C, N)
        rows = np.arange(block.shape[0])
        self_hit = np.zeros_like(same)
        self_hit[rows, start + rows] = True
        genuine_d = np.where(same & ~self_hit, block, np.inf).min(axis=1)
        impostor.append(np.where(~same, block, np.inf).min(axis=1))
        genuine.append(genuine_d[np.isfinite(genuine_d)])
    genuine_scores = np.concatenate(genuine)
    if not len(genuine_scores):
        raise DataError("calibration needs an identity with at least 2 sequences (genuine scores)")
    return genuine_scores, np.concatenate(impostor)


def far_frr(genuine: np.ndarray, impostor: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FAR and FRR `(T,)` at each of `thresholds (T,)` (accept when distance <= threshold)."""
    genuine, impostor = np.sort(np.asarray(genuine, float)), np.sort(np.asarray(impostor, float))
    thresholds = np.asarray(thresholds, float)
    far = np.searchsorted(impostor, thresholds, side="right") / max(len(impostor), 1)
    frr = 1.0 - np.searchsorted(genuine, thresholds, side="right") / max(len(genuine), 1)
    return far, frr


def _round_down(value: float, digits: int = DIGITS) -> float:
    """`value` rounded towards -inf to `digits` significant digits (so a printed threshold is the one used)."""
    if value <= 0 or not math.isfinite(value):
        return value
    rounded = float(f"{value:.{digits}g}")
    if rounded > value:
        step = 10.0 ** (math.floor(math.log10(value)) - digits + 1)
        rounded = float(f"{rounded - step:.{digits}g}")
    return rounded


def threshold_decimals(thresholds: Sequence[float], digits: int = DIGITS) -> int:
    """Decimals of one fixed format for a column of `thresholds`: enough to print each to `digits`
    significant digits, exactly when it has no more (as `threshold_at_far`'s have, so a printed
    threshold is the one used), and no more than the column needs."""
    decimals = 0
    for value in thresholds:
        if not (math.isfinite(value) and value > 0):
            continue
        limit = max(0, digits - 1 - math.floor(math.log10(value)))
        decimals = max(decimals, next((d for d in range(limit) if float(f"{value:.{d}f}") == value), limit))
    return decimals


def threshold_at_far(impostor: np.ndarray, target_far: float) -> float:
    """Largest threshold (6 significant digits) whose FAR on `impostor` scores is <= `target_far`."""
    if not 0.0 <= target_far <= 1.0:
        raise ValueError(f"target FAR must be within [0, 1], got {target_far}")
    scores = np.sort(np.asarray(impostor, float))
    if not len(scores):
        raise ValueError("no impostor scores")
    allowed = math.floor(target_far * len(scores) + 1e-9)   # impostors that may be accepted
    if allowed >= len(scores):
        return float(scores[-1])
    return _round_down(float(np.nextafter(scores[allowed], -np.inf)))   # just below the first refused


def equal_error_rate(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """(EER, its threshold): over all observed scores, the threshold where |FAR - FRR| is smallest."""
    candidates = np.unique(np.concatenate([genuine, impostor]))
    far, frr = far_frr(genuine, impostor, candidates)
    best = int(np.argmin(np.abs(far - frr)))
    return float((far[best] + frr[best]) / 2), float(candidates[best])


@dataclass(frozen=True)
class Calibration:
    target_far: float
    threshold: float
    far: float                      # achieved on the calibration set
    frr: float
    eer: float
    eer_threshold: float
    genuine: int                    # number of scores
    impostor: int
    table: tuple[tuple[float, float, float, float], ...]   # (target FAR, threshold, FAR, FRR)

    def to_dict(self) -> dict:
        result = asdict(self)
        result["table"] = [dict(zip(("target_far", "threshold", "far", "frr"), row)) for row in self.table]
        return result


def calibrate(genuine: np.ndarray, impostor: np.ndarray, target_far: float = 0.01,
              table_fars: Sequence[float] = TABLE_FARS) -> Calibration:
    """Threshold for `target_far`, its FAR/FRR, the EER and a trade-off table."""
    genuine, impostor = np.asarray(genuine, float), np.asarray(impostor, float)
    if not len(genuine) or not len(impostor):
        raise ValueError("calibration needs genuine and impostor scores")
    threshold = threshold_at_far(impostor, target_far)
    (far,), (frr,) = far_frr(genuine, impostor, [threshold])
    eer, eer_threshold = equal_error_rate(genuine, impostor)
    rows = []
    for target in sorted(set(table_fars) | {target_far}):
        t = threshold_at_far(impostor, target)
        (row_far,), (row_frr,) = far_frr(genuine, impostor, [t])
        rows.append((float(target), t, float(row_far), float(row_frr)))
    return Calibration(float(target_far), threshold, float(far), float(frr), eer, eer_threshold,
                       len(genuine), len(impostor), tuple(rows))


def plot_tradeoff(genuine: np.ndarray, impostor: np.ndarray, calibration: Calibration, out: str | Path,
                  title: str = "") -> Path:
    """PNG with the genuine/impostor score histograms and FAR/FRR against the threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    scores = np.concatenate([genuine, impostor])
    grid = np.linspace(scores.min(), scores.max(), 400)
    far, frr = far_frr(genuine, impostor, grid)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    bins = np.linspace(scores.min(), scores.max(), 40)
    left.hist(genuine, bins=bins, alpha=0.6, label=f"genuine ({len(genuine)})", density=True)
    left.hist(impostor, bins=bins, alpha=0.6, label=f"impostor ({len(impostor)})", density=True)
    left.set_xlabel("distance to nearest gallery sequence")
    left.set_ylabel("density")
    right.plot(grid, 100 * far, label="false accept rate")
    right.plot(grid, 100 * frr, label="false reject rate")
    right.set_xlabel("threshold (distance)")
    right.set_ylabel("%")
    right.set_ylim(0, 100)
    for ax in (left, right):
        ax.axvline(calibration.threshold, color="k", linestyle="--", linewidth=1,
                   label=f"threshold {calibration.threshold:.{threshold_decimals([calibration.threshold])}f} "
                         f"(FAR {100 * calibration.far:.2f}%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title or f"FAR/FRR trade-off (EER {100 * calibration.eer:.2f}%)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
