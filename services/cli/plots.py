"""The run overview figure: power split, PUE, temperatures and energy sources."""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pyarrow as pa


def overview_png(table: pa.Table, summary: dict[str, Any], path: Path | BinaryIO) -> None:
    c = {name: table.column(name).to_numpy() for name in table.column_names}
    mw = {name: c[name] * 1e-6 for name in c if name.endswith("_w")}  # shown in MW
    t = c["time_h"]
    fig, axes = plt.subplots(5, 1, figsize=(11, 14), sharex=True)
    # Fixed margins (legends sit inside the axes): a layout engine measures every label
    # and draws the figure twice, about a third of the time of a run's outputs.
    fig.subplots_adjust(left=0.07, right=0.98, top=0.96, bottom=0.04, hspace=0.08)
    site = summary.get("site", "")
    fig.suptitle(
        f"{site}: PUE {summary['pue']:.3f}, IT {summary['it_energy_mwh']:.0f} MWh, "
        f"max GPU {summary['max_gpu_temp_c']:.1f} °C"
    )

    ax = axes[0]
    parts = [
        ("IT", mw["it_w"]),
        ("cooling", mw["cooling_w"]),
        ("electrical losses", mw["losses_w"]),
        ("misc", mw["misc_w"]),
    ]
    ax.stackplot(t, *[v for _, v in parts], labels=[k for k, _ in parts], alpha=0.85)
    ax.plot(t, mw["facility_w"], color="black", lw=0.8, label="meter")
    ax.set_ylabel("facility power (MW)")
    ax.legend(loc="upper right", ncol=5, fontsize=8)

    ax = axes[1]
    ax.plot(t, c["pue"], color="tab:purple")
    ax.set_ylabel("PUE")

    ax = axes[2]
    ax.plot(t, c["tcs_supply_mean_c"], label="TCS supply (mean)")
    ax.plot(t, c["facility_supply_c"], label="facility water supply")
    ax.plot(t, c["rack_outlet_c"], label="rack outlet (mean)")
    ax.plot(t, c["ambient_c"], label="ambient dry bulb", color="grey")
    ax.set_ylabel("temperature (°C)")
    ax.legend(loc="upper right", ncol=4, fontsize=8)

    ax = axes[3]
    ax.plot(t, c["gpu_temp_max_c_max"], color="tab:red", label="max GPU die")
    ax.plot(t, c["gpu_temp_mean_c"], color="tab:orange", label="mean GPU die")
    ax.set_ylabel("GPU temperature (°C)")
    ax.legend(loc="upper right", fontsize=8)

    ax = axes[4]
    ax.plot(t, mw["grid_w"], label="grid import")
    ax.plot(t, mw["ppa_w"], label="PPA output")
    ax.plot(t, mw["battery_w"], label="battery (+ discharge)")
    ax.plot(t, mw["generation_w"], label="on-site generation")
    ax.set_ylabel("sources (MW)")
    ax.set_xlabel("hours since start")
    ax.legend(loc="upper right", ncol=4, fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
