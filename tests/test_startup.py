"""Start-up: the compiled initial state, chunked rollouts, the persistent compilation cache,
``twin simulate --no-merge`` and the imports of the start path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import F64, ROOT, SMALL

from twin_core import build_params, init_state, load_drivers, load_site
from twin_core.rollout import plan, progress_chunks, run_records

CACHE = "TWIN_COMPILATION_CACHE_DIR"
HITS = "/jax/compilation_cache/cache_hits"


def twin(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def small_params(horizon_s: float, dt: float):
    site = load_site(SMALL)
    return build_params(site, load_drivers(site), horizon_s=horizon_s, dt=dt, dtype=F64)


def max_rel_diff(a, b) -> float:
    def rel(x, y) -> float:
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        return float(np.max(np.abs(x - y) / np.maximum(np.abs(y), 1.0), initial=0.0))

    return max(jax.tree.leaves(jax.tree.map(rel, a, b)))


# -- the model ---------------------------------------------------------------------------


def test_compiled_init_state_equals_the_two_passes_stepped_op_by_op() -> None:
    p = small_params(3600.0, 1.0)
    compiled = init_state(p)
    with jax.disable_jit():  # the two priming passes as a Python loop, one op at a time
        stepped = init_state(p)
    assert jax.tree.structure(compiled) == jax.tree.structure(stepped)
    assert max_rel_diff(compiled, stepped) <= 1e-12
    # Primed: the meter sees the site's load from the first interval, not zero.
    assert float(compiled.boundary.meter_w) > 1e5


@pytest.mark.parametrize(
    ("n_records", "every", "max_chunks", "min_steps", "chunks"),
    [
        (1440, 60, 100, 4096, 20),  # a day at 1 s: 72 records (4,320 steps) per piece
        (1439, 60, 100, 4096, 1),  # prime: one piece rather than 1,439
        (525_600, 60, 100, 4096, 100),  # a year at 1 s: the cap
        (150, 1, 100, 1, 75),  # at most 100: pieces of 2
        (1, 60, 100, 4096, 1),
    ],
)
def test_progress_chunks_are_equal_and_large(n_records, every, max_chunks, min_steps, chunks):
    got = progress_chunks(n_records, every, max_chunks, min_steps)
    assert got == chunks
    assert n_records % got == 0 and got <= max_chunks


def test_chunking_does_not_change_the_results() -> None:
    p = small_params(3600.0, 10.0)
    n_records, every = plan(3600.0, 10.0, 60.0)  # 60 records of 6 steps
    s0 = init_state(p)
    whole = run_records(p, s0, n_records, every)
    reports: list[int] = []
    phases: list[str] = []
    pieces = run_records(p, s0, n_records, every, reports.append, chunks=7, phase=phases.append)
    assert reports == [10] * 6  # 7 asked: the smallest divisor of 60 >= ceil(60 / 7)
    assert phases == ["compile"]
    assert pieces[1].shape == whole[1].shape == (60, whole[1].shape[1])
    assert max_rel_diff(pieces, whole) <= 1e-12


# -- the compilation cache ---------------------------------------------------------------

RUN = ("simulate", str(SMALL), "--duration", "10m", "--dt", "60s", "--record", "1m")
# The CLI in a process that counts the persistent cache's hits (JAX's monitoring events).
COUNT_HITS = f"""
import sys
import jax.monitoring
hits = []
jax.monitoring.register_event_listener(lambda event, **_: hits.append(event))
from services.cli.main import app
sys.argv = ["twin", *sys.argv[1:]]
try:
    app()
except SystemExit as exc:
    assert not exc.code, exc.code
print("hits", hits.count({HITS!r}))
"""


def entries(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("*-cache")}


def test_a_second_process_loads_what_the_first_compiled(tmp_path: Path) -> None:
    cache = tmp_path / "jax"
    first = twin(*RUN, "--out", str(tmp_path / "a"), env={CACHE: str(cache)})
    assert first.returncode == 0, first.stderr
    written = entries(cache)
    assert len(written) >= 3  # the initial state, the rollout, the KPIs (and small ones)

    second = subprocess.run(
        [sys.executable, "-c", COUNT_HITS, *RUN, "--out", str(tmp_path / "b")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env={**os.environ, CACHE: str(cache)},
    )
    assert second.returncode == 0, second.stderr
    hits = int(second.stdout.rsplit("hits", 1)[1])
    assert hits >= 3 and entries(cache) == written  # loaded, nothing compiled anew
    # ... from the programs the first process kept lowered (twin_core/lowered.py)
    assert sorted(p.name.split("-")[0] for p in (cache / "lowered").iterdir()) == [
        "init_state",
        "rollout",
    ]
    summaries = [json.loads((tmp_path / d / "summary.json").read_text()) for d in "ab"]
    assert summaries[0]["pue"] == summaries[1]["pue"]


def test_off_writes_no_cache_and_the_default_is_under_the_user_cache(tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    done = twin(*RUN, "--out", str(tmp_path / "o"), env={CACHE: "off", "XDG_CACHE_HOME": str(xdg)})
    assert done.returncode == 0, done.stderr
    assert not (xdg / "ai-factory-twin").exists()  # (matplotlib keeps its font list there)
    assert not list(xdg.rglob("*-cache"))

    from services.runtime import compilation_cache

    os.environ["XDG_CACHE_HOME"] = str(xdg)
    try:
        assert compilation_cache.resolve(None) == xdg / "ai-factory-twin" / "jax"
        assert compilation_cache.resolve("  ") == xdg / "ai-factory-twin" / "jax"
    finally:
        del os.environ["XDG_CACHE_HOME"]
    assert compilation_cache.resolve("OFF") is None
    assert compilation_cache.resolve("~/x") == Path.home() / "x"


@pytest.mark.parametrize("command", [RUN, ("serve", "compute")])
def test_an_unusable_cache_folder_is_one_line(tmp_path: Path, command: tuple[str, ...]) -> None:
    taken = tmp_path / "a-file"
    taken.write_text("")
    out = tmp_path / "never"
    args = (*command, "--out", str(out)) if command[0] == "simulate" else command
    done = twin(*args, env={CACHE: str(taken)})
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {CACHE}: {str(taken)!r} is not a folder"
    assert not out.exists()


# -- --no-merge ----------------------------------------------------------------------------


def test_no_merge_gives_the_merged_series(tmp_path: Path) -> None:
    args = ("simulate", str(SMALL), "--duration", "30m", "--dt", "10s", "--x64")
    merged = twin(*args, "--out", str(tmp_path / "m"))
    every = twin(*args, "--out", str(tmp_path / "e"), "--no-merge")
    assert merged.returncode == 0, merged.stderr
    assert every.returncode == 0, every.stderr
    summaries = {d: json.loads((tmp_path / d / "summary.json").read_text()) for d in "me"}
    assert summaries["m"]["merge_identical"] is True
    assert summaries["e"]["merge_identical"] is False
    a = pq.read_table(tmp_path / "m" / "timeseries.parquet")
    b = pq.read_table(tmp_path / "e" / "timeseries.parquet")
    assert a.column_names == b.column_names and a.num_rows == b.num_rows == 30
    for name in a.column_names:
        x, y = a.column(name).to_numpy(), b.column(name).to_numpy()
        np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-9, err_msg=name)
    for key in ("pue", "it_energy_mwh", "max_gpu_temp_c", "cost_usd"):
        assert summaries["e"][key] == pytest.approx(summaries["m"][key], rel=1e-9)


def test_no_merge_takes_no_value() -> None:
    done = twin(*RUN, "--no-merge=yes")
    assert done.returncode == 2
    assert "Option '--no-merge' does not take a value" in done.stderr


# -- imports on the start path -----------------------------------------------------------


def python_script(script: str) -> subprocess.CompletedProcess[str]:
    """``script`` run by a fresh interpreter here; it must succeed."""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done


def test_simulate_help_imports_no_model_bus_or_writers() -> None:
    script = (
        "import sys\n"
        "from services.cli.main import app\n"
        "sys.argv = ['twin', 'simulate', '--help']\n"
        "try:\n    app()\nexcept SystemExit:\n    pass\n"
        "heavy = ('jax', 'grpc', 'nats', 'aiohttp', 'matplotlib', 'pyarrow', 'psycopg')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    done = python_script(script)
    assert "--no-merge" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_the_model_start_path_imports_no_scipy_pandas_or_pvlib() -> None:
    """scipy.signal (the power-quality spectrum), pandas and pvlib (a fresh EPW parse) each
    cost a large part of a second to import: a plain run never needs them."""
    script = (
        "import sys\n"
        "import twin_core, twin_core.rollout, twin_core.spectrum\n"
        "heavy = ('scipy', 'pandas', 'pvlib')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    done = python_script(script)
    assert done.stdout.strip() == "[]"


def test_the_console_entry_point_freezes_the_heap_before_shutdown() -> None:
    # atexit runs last-registered first: this print runs after main's gc.freeze.
    script = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('frozen', gc.get_freeze_count() > 0))\n"
        "from services.cli.main import main\n"
        "sys.argv = ['twin', '--help']\n"
        "main()\n"
    )
    done = python_script(script)
    assert done.stdout.strip().splitlines()[-1] == "frozen True"


XLA_THREADS = """
import os, sys
import jax, jax.numpy as jnp
from services.serve import one_xla_thread_for_domains
one_xla_thread_for_domains(sys.argv[1])
jax.block_until_ready(jax.jit(lambda a: [a * i for i in range(8)])(jnp.ones(4096)))
names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
print(names.count("tf_XLAEigen"))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads Linux's /proc")
@pytest.mark.parametrize(
    ("service", "preset", "threads"),
    [("cooling", None, 1), ("compute", "2", 2), ("twin", None, len(os.sched_getaffinity(0)))],
)
def test_domain_services_step_on_one_xla_thread_unless_the_operator_sets_it(
    service: str, preset: str | None, threads: int
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PJRT_NPROC", "NPROC")}
    if preset is not None:
        env["PJRT_NPROC"] = preset
    run = subprocess.run(
        [sys.executable, "-c", XLA_THREADS, service],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    assert int(run.stdout) == threads


SIMULATE_THREADS = """
import os, sys
from typer.testing import CliRunner
from services.cli.main import app
args = ["simulate", sys.argv[1], "--duration", "120s", "--out", sys.argv[2]]
done = CliRunner().invoke(app, [*args, "--granularity", sys.argv[3]])
assert done.exit_code == 0, done.output
names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
print(names.count("tf_XLAEigen"))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads Linux's /proc")
@pytest.mark.parametrize(
    ("granularity", "threads"), [("rack", 1), ("gpu", len(os.sched_getaffinity(0)))]
)
def test_simulate_at_rack_granularity_steps_on_one_xla_thread(
    tmp_path: Path, granularity: str, threads: int
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PJRT_NPROC", "NPROC")}
    run = subprocess.run(
        [sys.executable, "-c", SIMULATE_THREADS, str(SMALL), str(tmp_path), granularity],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={**env, CACHE: "off"},
    )
    assert run.returncode == 0, run.stderr
    assert int(run.stdout.strip().splitlines()[-1]) == threads
