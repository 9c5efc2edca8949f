"""Figures of the History API's series: ``twin history query --plot`` and the hourly
report of ``twin up --duration --report``. Imported only when a figure is asked for."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from services.cli.errors import fail
from services.cli.files import write_atomic


def report_png(path: Path, fine, hourly, title: str) -> None:
    """Facility and IT power and PUE over the run, with the hourly values as steps."""
    t = [r.time_s / 3600 for r in fine]
    facility = [r.values[0] / 1e6 for r in fine]
    it = [r.values[1] / 1e6 for r in fine]
    series = [
        ("power (MW)", [("facility", facility), ("IT", it)]),
        (
            "PUE",
            [("PUE", [f / i if i else float("nan") for f, i in zip(facility, it, strict=True)])],
        ),
    ]
    th = [r.time_s / 3600 for r in hourly] + [t[-1]]  # the last hour drawn to the end
    fig, axes = plt.subplots(2, 1, sharex=True, figsize=(9, 6))
    for k, (ax, (label, lines)) in enumerate(zip(axes, series, strict=True)):
        for name, values in lines:
            ax.plot(t, values, label=name, linewidth=1)
        for j in (0, 1) if k == 0 else (2,):
            ax.step(th, [r.values[j] for r in [*hourly, hourly[-1]]], where="post", color="black",
                    linewidth=1.5, alpha=0.6, label="hourly" if j in (0, 2) else None)  # fmt: skip
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    axes[-1].set_xlabel("simulated time (h)")
    axes[0].set_title(title)
    fig.tight_layout()
    _save(fig, path, "--report", dpi=110)


def series_png(path: Path, metrics: list[str], rows: list, title: str) -> None:
    """One panel per metric of History API rows, against simulated hours."""
    hours = [r.time_s / 3600 for r in rows]
    fig, axes = plt.subplots(
        len(metrics), 1, sharex=True, squeeze=False, figsize=(9, 2.5 * len(metrics))
    )
    for i, m in enumerate(metrics):
        ax = axes[i][0]
        ax.plot(hours, [r.values[i] for r in rows])
        ax.set_ylabel(m)
        ax.grid(True, alpha=0.3)
    axes[-1][0].set_xlabel("simulated time (h)")
    axes[0][0].set_title(title)
    fig.tight_layout()
    _save(fig, path, "--plot")


def _save(fig, path: Path, option: str, **options) -> None:
    """``fig`` to ``path`` atomically, in the format its suffix names (PNG without one)."""
    kind = path.suffix.lstrip(".").lower() or "png"
    try:
        write_atomic(path, lambda f: fig.savefig(f, format=kind, **options))
    except OSError as exc:
        if exc.errno is not None:
            exc.filename = str(path)  # the file asked for, not the temp file beside it
        fail(f"{option}: {exc}")
    finally:
        plt.close(fig)
