"""The run overview figure: power split, PUE, temperatures and energy sources."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pyarrow as pa


def overview_png(table: pa.Table, summary: dict[str, Any], path: Path) -> None:
    c = {name: table.column(name).to_numpy() for name in table.column_names}
    t = c["time_h"]
    fig, axes = plt.subplots(5, 1, figsize=(11, 14), sharex=True, constrained_layout=True)
    site = summary.get("site", "")
    fig.suptitle(
        f"{site}: PUE {summary['pue']:.3f}, IT {summary['it_energy_mwh']:.0f} MWh, "
        f"max GPU {summary['max_gpu_temp_c']:.1f} °C"
    )

    ax = axes[0]
    parts = [
        ("IT", c["it_power_mw"]),
        ("cooling", c["cooling_power_mw"]),
        ("electrical losses", c["electrical_losses_mw"]),
        ("misc", c["misc_mw"]),
    ]
    ax.stackplot(t, *[v for _, v in parts], labels=[k for k, _ in parts], alpha=0.85)
    ax.plot(t, c["facility_power_mw"], color="black", lw=0.8, label="meter")
    ax.set_ylabel("facility power (MW)")
    ax.legend(loc="upper right", ncol=5, fontsize=8)

    ax = axes[1]
    ax.plot(t, c["pue"], color="tab:purple")
    ax.set_ylabel("PUE")

    ax = axes[2]
    ax.plot(t, c["tcs_supply_c"], label="TCS supply (mean)")
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
    ax.plot(t, c["grid_mw"], label="grid import")
    ax.plot(t, c["ppa_mw"], label="PPA output")
    ax.plot(t, c["battery_mw"], label="battery (+ discharge)")
    ax.plot(t, c["generation_mw"], label="on-site generation")
    ax.set_ylabel("sources (MW)")
    ax.set_xlabel("hours since start")
    ax.legend(loc="upper right", ncol=4, fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
