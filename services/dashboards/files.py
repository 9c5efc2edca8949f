"""The dashboards as the chart's files: one JSON file per dashboard."""

from __future__ import annotations

import json
from pathlib import Path

from services.dashboards.boards import DASHBOARDS

FOLDER = Path(__file__).resolve().parents[2] / "charts" / "ai-factory-twin" / "files" / "dashboards"


def render() -> dict[str, str]:
    """File name -> its text."""
    return {
        f"{name}.json": json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
        for name, build in DASHBOARDS.items()
    }


def write(folder: Path = FOLDER) -> list[Path]:
    """Write every dashboard; remove JSON files no dashboard makes. Returns what changed."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted = render()
    changed = []
    for stale in folder.glob("*.json"):
        if stale.name not in wanted:
            stale.unlink()
            changed.append(stale)
    for name, text in wanted.items():
        path = folder / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            changed.append(path)
    return changed
