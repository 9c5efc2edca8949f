"""Prometheus file-based service discovery for a local twin (``twin up
--prometheus-targets FILE``): one target group per service, its loopback /metrics
address labelled ``twin_service`` (the label the chart's ServiceMonitors set and the
alert rules select by) and ``twin_instance`` (the twin's id, to tell twins apart).

A Prometheus reads it with ``file_sd_configs: [{files: [FILE]}]`` and rereads it when it
changes; the file is replaced whole (written beside it, then renamed), so a reader never
sees half of it, and removed when the twin stops, which drops its targets.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def target_groups(metrics_addresses: dict[str, str], instance_id: str) -> list[dict]:
    """The file_sd groups: one per service, in the order given."""
    return [
        {"targets": [address], "labels": {"twin_service": name, "twin_instance": instance_id}}
        for name, address in metrics_addresses.items()
    ]


def write(path: Path, metrics_addresses: dict[str, str], instance_id: str) -> None:
    """Replace ``path`` with the targets (JSON), atomically."""
    text = json.dumps(target_groups(metrics_addresses, instance_id), indent=2) + "\n"
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)
