"""The run folder: what `bpmt train` writes and everything else reads.

RUN/
  config.yaml              the resolved config
  meta.json                data source, identity -> label map, input channels, partition
  <stage>/last.ckpt        resumable training state (Fabric checkpoint; removed when the stage ends)
  <stage>/weights.safetensors   the stage's final weights (its presence = stage complete)
  <stage>/log.csv, loss.png      per-step losses and their plot
  model.safetensors + model.json   the exported recogniser (see engine/export.py)
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

STAGES = ("phase1", "phase2", "finetune")


class RunFolder:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def stage_dir(self, stage: str) -> Path:
        return self.root / stage

    def checkpoint(self, stage: str) -> Path:
        return self.stage_dir(stage) / "last.ckpt"

    def weights(self, stage: str) -> Path:
        return self.stage_dir(stage) / "weights.safetensors"

    def log(self, stage: str) -> Path:
        return self.stage_dir(stage) / "log.csv"

    def is_complete(self, stage: str) -> bool:
        return self.weights(stage).is_file()

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def meta(self) -> Path:
        return self.root / "meta.json"

    @property
    def model(self) -> Path:
        return self.root / "model.safetensors"

    def read_meta(self) -> dict:
        return json.loads(self.meta.read_text())


def write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


class CsvLog:
    """Append-only per-step log that survives resume: rows at or after the resume step are dropped."""

    def __init__(self, path: Path, start_step: int):
        self.path = path
        rows: list[dict] = []
        if path.is_file() and start_step > 0:
            with open(path, newline="") as handle:
                rows = [r for r in csv.DictReader(handle) if int(r["step"]) < start_step]
        self.fields: list[str] = list(rows[0].keys()) if rows else []
        self.rows = rows
        self._rewrite()

    def _rewrite(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="") as handle:
            if self.fields:
                writer = csv.DictWriter(handle, fieldnames=self.fields)
                writer.writeheader()
                writer.writerows(self.rows)
        os.replace(tmp, self.path)

    def append(self, row: dict) -> None:
        row = {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()}
        if not self.fields:
            self.fields = list(row.keys())
            self.rows.append(row)
            self._rewrite()
            return
        self.rows.append(row)
        with open(self.path, "a", newline="") as handle:
            csv.DictWriter(handle, fieldnames=self.fields, extrasaction="ignore").writerow(row)


def read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))
