"""Plain-text tables of retrieval results. Pure functions: they return strings, callers print."""

from __future__ import annotations

from typing import Mapping, Sequence

COLUMNS = ("rank1", "rank5", "rank10", "mAP", "mINP", "queries")
HEADERS = {"rank1": "Rank-1", "rank5": "Rank-5", "rank10": "Rank-10", "mAP": "mAP", "mINP": "mINP",
           "queries": "queries"}


def _cell(key: str, value) -> str:
    if key == "queries":
        return f"{value:g}" if isinstance(value, float) else str(value)
    return f"{value:.2f}"


def _table(first_header: str, columns: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]]) -> str:
    header = [first_header] + [HEADERS.get(c, c) for c in columns]
    lines = [header] + [[label, *cells] for label, cells in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(line))
            for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def format_results(results: Mapping[str, Mapping[str, float]], columns: Sequence[str] = COLUMNS) -> str:
    """One row per protocol: `{"official": {...}, "loo": {...}}` -> table (metrics in percent)."""
    rows = [(name, [_cell(c, metrics[c]) for c in columns]) for name, metrics in results.items()]
    return _table("protocol", columns, rows)


def format_folds(per_fold: Sequence[Mapping[str, float]], summary: Mapping[str, Mapping[str, float]],
                 columns: Sequence[str] = COLUMNS, labels: Sequence[str] | None = None) -> str:
    """One row per fold (or per labelled run) plus a `mean ± std` row (`summary` as from `protocols.mean_std`)."""
    labels = labels or [f"fold {k}" for k in range(len(per_fold))]
    rows = [(label, [_cell(c, result[c]) for c in columns]) for label, result in zip(labels, per_fold)]
    rows.append(("mean ± std", [f"{summary[c]['mean']:.1f} ± {summary[c]['std']:.1f}" for c in columns]))
    return _table("fold", columns, rows)
