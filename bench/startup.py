"""Start-up benchmark: ``twin simulate`` of 24 h Fairwater at dt = 1 s end to end, cold (an
empty compilation cache) and warm (the same cache again), with the stages of each run, and
``twin up`` until every service serves (cold, then warm), printed as a table with targets
and ratios.

    python bench/startup.py                       # 3 rounds
    python bench/startup.py --before /work/main   # the same runs of another checkout,
                                                  # interleaved round by round

Every figure is the wall time of a fresh process (``python -m services.cli ...``), so it
holds the interpreter's start and every import; the stages come from the run's own
``--timings`` file, and "start" is what is left: the interpreter and the command's imports.
Each round uses a new cache folder, so its cold run is cold. Figures are medians over the
rounds with their range: on a machine shared with other work they move between runs, so
each row also gives the CPU seconds (user + system) its processes used, which other work
on the machine changes much less than the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
FAIRWATER = ROOT / "scenarios" / "fairwater-wi.yaml"
CACHE = "TWIN_COMPILATION_CACHE_DIR"
TARGETS = {"warm simulate": 6.0, "cold simulate": 20.0, "warm twin up": 15.0}
STAGES = (
    "start",
    "imports",
    "site",
    "params",
    "init_state",
    "compile",
    "stepping",
    "kpis",
    "outputs",
)

# ``LocalTwin`` of the checkout on PYTHONPATH, Fairwater: until every service serves, then
# until a run's first step is published (the domains build and compile the model at Start).
TWIN_UP = """
import tempfile, time
import grpc
from services.launcher import LocalTwin, free_addresses
from twin.twin.v1 import clock_pb2
from twin.twin.v1 import twin_pb2, twin_pb2_grpc
log = tempfile.NamedTemporaryFile(prefix="twin-up-", suffix=".log", delete=False).name
start = time.perf_counter()
with LocalTwin("fairwater-wi", free_addresses(), log_path=log, ready_timeout_s=300) as twin:
    print("ready", time.perf_counter() - start, flush=True)
    with grpc.insecure_channel(twin.addresses["twin"]) as channel:
        stub = twin_pb2_grpc.TwinServiceStub(channel)
        spec = clock_pb2.RunSpec(scenario_name="fairwater-wi", dt_s=1.0, horizon_s=3600)
        speed = clock_pb2.Speed(as_fast_as_possible=True)
        run = stub.Start(twin_pb2.StartRequest(spec=spec, speed=speed), timeout=600).run_id
        request = twin_pb2.GetSnapshotRequest(run_id=run)
        while stub.GetSnapshot(request, timeout=60).snapshot.step < 1:
            time.sleep(0.05)
    print("stepping", time.perf_counter() - start, flush=True)
"""


def env_for(tree: Path, cache: Path | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": f"{tree}:{tree / 'proto' / 'gen' / 'python'}"}
    env.pop(CACHE, None)
    if cache is not None:
        env[CACHE] = str(cache)
    return env


def children_cpu_s() -> float:
    """CPU seconds used so far by the finished child processes (and theirs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def simulate(tree: Path, cache: Path | None, out: Path) -> tuple[float, float, dict[str, float]]:
    """Wall and CPU seconds of one ``twin simulate`` and its stages (none from a tree
    without ``--timings``)."""
    timings = out / "timings.json"
    command = [sys.executable, "-m", "services.cli", "simulate", str(FAIRWATER)]
    command += ["--duration", "24h", "--dt", "1s", "--out", str(out)]
    has_timings = "timings" in (tree / "services" / "cli" / "simulate.py").read_text()
    if has_timings:
        command += ["--timings", str(timings)]
    start, cpu = time.perf_counter(), children_cpu_s()
    done = subprocess.run(
        command, cwd=tree, env=env_for(tree, cache), capture_output=True, text=True
    )
    wall, cpu = time.perf_counter() - start, children_cpu_s() - cpu
    if done.returncode:
        raise SystemExit(f"twin simulate failed in {tree}:\n{done.stderr[-2000:]}")
    stages: dict[str, float] = json.loads(timings.read_text()) if has_timings else {}
    if stages:
        stages = {"start": wall - sum(stages.values()), **stages}
    return wall, cpu, stages


def twin_up(tree: Path, cache: Path | None) -> tuple[float, float, float]:
    """Seconds from starting a local Fairwater twin until every service serves, until the
    first step of a run is published, and the CPU seconds of it all (the stop included)."""
    cpu = children_cpu_s()
    done = subprocess.run(
        [sys.executable, "-c", TWIN_UP],
        cwd=tree,
        env=env_for(tree, cache),
        capture_output=True,
        text=True,
        timeout=600,
    )
    seen = dict(line.split() for line in done.stdout.splitlines() if line.count(" ") == 1)
    if done.returncode or "stepping" not in seen:
        raise SystemExit(f"twin up failed in {tree}:\n{done.stderr[-2000:]}")
    return float(seen["ready"]), float(seen["stepping"]), children_cpu_s() - cpu


def spread(values: list[float]) -> str:
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:.1f} s"
    return f"{median:.1f} s ({min(values):.1f}–{max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", type=Path, help="another checkout, measured alongside")
    parser.add_argument("--no-up", action="store_true", help="skip `twin up`")
    args = parser.parse_args()

    runs: dict[str, list[float]] = {}
    cpus: dict[str, list[float]] = {}
    stages: dict[str, dict[str, list[float]]] = {"cold": {}, "warm": {}}

    def record(name: str, seconds: float, cpu: float | None = None) -> None:
        runs.setdefault(name, []).append(seconds)
        if cpu is not None:
            cpus.setdefault(name, []).append(cpu)
        shown = f"  {name}: {seconds:.1f} s" + (f", {cpu:.1f} CPU s" if cpu else "")
        Console(stderr=True).print(shown, highlight=False)

    with tempfile.TemporaryDirectory(prefix="twin-startup-") as tmp:
        for r in range(args.rounds):
            Console(stderr=True).print(f"round {r + 1} of {args.rounds}")
            cache = Path(tmp) / f"cache-{r}"
            if args.before is not None:  # no cache: the checkout may not know the variable
                before_cache = Path(tmp) / f"before-{r}"
                wall, cpu, _ = simulate(args.before, before_cache, Path(tmp) / f"b{r}")
                record("before: simulate", wall, cpu)
            for kind in ("cold", "warm"):
                wall, cpu, parts = simulate(ROOT, cache, Path(tmp) / f"{kind}{r}")
                record(f"{kind} simulate", wall, cpu)
                for stage, seconds in parts.items():
                    stages[kind].setdefault(stage, []).append(seconds)
            if args.no_up:
                continue
            trees = [("before: ", args.before)] if args.before is not None else []
            trees += [("cold ", ROOT), ("warm ", ROOT)]
            for label, tree in trees:
                ready, stepping, cpu = twin_up(tree, cache / "up")
                record(f"{label}twin up", ready)
                record(f"{label}twin up, first step of a run", stepping, cpu)

    console = Console()
    table = Table(title="start-up: 24 h of Fairwater (2,880 racks) at dt = 1 s, merged racks")
    columns = ("figure", "wall time (median, range)", "target", "ratio (target / figure)")
    for column in (*columns, "CPU s (median)"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    for name, values in runs.items():
        target = TARGETS.get(name)
        median = statistics.median(values)
        shown_target = f"≤ {target:g} s" if target else "—"
        ratio = f"{target / median:.2f}" if target else "—"
        cpu = f"{statistics.median(cpus[name]):.1f}" if name in cpus else "—"
        table.add_row(name, spread(values), shown_target, ratio, cpu)
    console.print(table)

    table = Table(title="twin simulate stages (median seconds; start = interpreter + imports)")
    table.add_column("stage")
    table.add_column("cold", justify="right")
    table.add_column("warm", justify="right")
    for stage in STAGES:
        cold = stages["cold"].get(stage)
        warm = stages["warm"].get(stage)
        table.add_row(
            stage,
            f"{statistics.median(cold):.2f}" if cold else "—",
            f"{statistics.median(warm):.2f}" if warm else "—",
        )
    console.print(table)
    console.print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
