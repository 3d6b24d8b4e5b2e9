"""Models shipped inside the package, usable by name wherever a MODEL argument is taken.

Each lives in `bpmt/pretrained/<name>/` as an exported model (`model.safetensors` + `model.json`,
fingerprinted like any `bpmt train` export) plus `MODEL_CARD.md`: the data it saw, the command
that trained it, its measured accuracy and its licence terms. `bpmt models` lists them; commands
whose MODEL argument is left out use `DEFAULT_MODEL`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "pretrained"
DEFAULT_MODEL = "gait3d-38ids"


@dataclass(frozen=True)
class ShippedModel:
    name: str
    folder: Path

    @property
    def weights(self) -> Path:
        return self.folder / "model.safetensors"

    @property
    def card(self) -> Path:
        return self.folder / "MODEL_CARD.md"

    def summary(self) -> str:
        """The model card's first paragraph after its title (one line)."""
        lines = self.card.read_text().splitlines() if self.card.is_file() else []
        body = [line.strip() for line in lines[1:]]
        start = next((i for i, line in enumerate(body) if line), len(body))
        end = next((i for i in range(start, len(body)) if not body[i]), len(body))
        return " ".join(body[start:end])


def shipped_models() -> list[ShippedModel]:
    """Every model shipped in the package, by name."""
    if not ROOT.is_dir():
        return []
    return [ShippedModel(p.name, p) for p in sorted(ROOT.iterdir()) if (p / "model.safetensors").is_file()]


def shipped_model(name: str) -> ShippedModel | None:
    return next((m for m in shipped_models() if m.name == name), None)
