"""Plots written into run folders: per-stage loss curves and CMC curves."""

from __future__ import annotations

from pathlib import Path

from .run import read_log


def plot_losses(log_path: Path, out: Path, title: str = "") -> Path | None:
    """Loss (and its logged components) against step, from a stage's `log.csv`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_log(log_path)
    if not rows:
        return None
    steps = [int(r["step"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key in rows[0]:
        if key in ("step", "lr", "accuracy", "pair"):
            continue
        points = [(s, float(r[key])) for s, r in zip(steps, rows) if r.get(key) not in (None, "")]
        ax.plot([s for s, _ in points], [v for _, v in points], label=key, linewidth=1.5 if key == "loss" else 0.8)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_cmc(cmc: list[float], out: Path, title: str = "") -> Path:
    """CMC curve: identification rate (%) against rank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(range(1, len(cmc) + 1), cmc, marker="o", markersize=3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))       # ranks are whole numbers
    ax.set_xlabel("rank")
    ax.set_ylabel("identification rate (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
