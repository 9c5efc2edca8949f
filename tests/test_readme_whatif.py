"""The README's what-if example runs as printed, and each variant shows what it is for."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_command() -> list[str]:
    """The ``twin whatif`` command of the README's What-if section, as argv."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## What-if studies") :]
    block = section[section.index("```bash\n") + 8 :]
    block = block[: block.index("```")]
    line = block.replace("\\\n", " ").split("#")[0]
    return shlex.split(line)


def test_the_readme_command_is_the_example_the_test_runs():
    argv = readme_command()
    assert argv[:3] == ["twin", "whatif", "scenarios/fairwater-wi.yaml"]
    names = [v.split(":")[0] for i, v in enumerate(argv) if i and argv[i - 1] == "--variant"]
    assert names == ["heatwave", "chillers-out", "gb300", "battery"]


@pytest.mark.slow
def test_each_readme_variant_differs_from_the_base_as_described(tmp_path):
    argv = readme_command()
    argv[argv.index("--out") + 1] = str(tmp_path)
    env = {**os.environ, "COLUMNS": "200"}
    subprocess.run([sys.executable, "-m", "services.cli", *argv[1:]], cwd=ROOT, env=env, check=True)
    study = json.loads((tmp_path / "study.json").read_text())
    v = {x["name"]: x for x in study["variants"]}
    k = {name: x["kpis"] for name, x in v.items()}
    base, hot, out = k["base"], k["heatwave"], k["chillers-out"]
    # the heat wave brings more chillers in
    assert hot["chiller_hours"] > base["chiller_hours"] + 10.0
    assert hot["pue"] > base["pue"] + 0.01
    # losing four chillers in that heat: fewer run, the water and GPUs run hotter
    assert out["chiller_hours"] < hot["chiller_hours"] - 2.0
    assert out["max_gpu_temp_c"] > hot["max_gpu_temp_c"] + 0.2
    assert out["max_supply_c"] > hot["max_supply_c"] + 0.2
    # GB300 halls: their smoothing takes megawatts per second off the grid ramp
    assert k["gb300"]["max_grid_ramp_mw_per_s"] < base["max_grid_ramp_mw_per_s"] - 2.0
    # the battery is the variant that meets the utility's ramp limit
    assert not v["base"]["passed"] and v["battery"]["passed"]
    assert k["battery"]["max_grid_ramp_mw_per_s"] <= 0.5 * (1 + 1e-6)  # held at its limit
