"""What-if studies on a Dask cluster: a study's variants split into chunks, each chunk a
``dask.distributed`` task, gathered back in order into one ``StudyResult``.

The chunks are the ones ``run_batch`` makes in-process (``chunk_size``: same size, the
last one padded the same way), so a study run here on workers with the backend and
device count of the caller equals ``run_study(..., chunk=N)`` bit for bit. Chunks carry
their parameters in the task itself (never scattered to one worker), so the scheduler
can re-run the chunks of a worker that dies.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from distributed import Client, LocalCluster, as_completed

from twin_core.batch import chunk_size, run_batch
from twin_core.coupling import TwinState
from twin_core.montecarlo import MonteCarloResult, MonteCarloSpec, run_monte_carlo
from twin_core.params import Params
from twin_core.site import Site
from twin_core.study import StudyError, StudyResult, StudySpec, run_study

OPTION = "--dask"
# The scheduler a deployment's study workers listen on (the chart's studyWorkers): the
# twin service runs its studies there, and `twin whatif` without --dask or --server too.
SCHEDULER_ENV = "TWIN_DASK_SCHEDULER"
MAX_LOCAL_WORKERS = 64
CONNECT_TIMEOUT_S = 10.0
_ADDRESS = re.compile(r"^(tcp|tls)://[^\s/]+:\d{1,5}$")


class ClusterError(StudyError):
    """A cluster that cannot be named or reached (a study that cannot run); ``str()`` is
    one line naming the option."""


@dataclass(frozen=True)
class DaskTarget:
    """``local:N`` (a LocalCluster of N one-thread workers on loopback) or a scheduler
    address (``tcp://host:port``, ``tls://host:port``)."""

    local_workers: int | None = None
    address: str | None = None


def parse_target(text: str, option: str = OPTION) -> DaskTarget:
    """``local:2`` or ``tcp://host:8786``; ClusterError naming ``option`` otherwise."""
    text = text.strip()
    if text.startswith("local:"):
        count = text.removeprefix("local:")
        if not count.isdigit() or not 1 <= int(count) <= MAX_LOCAL_WORKERS:
            raise ClusterError(
                f"{option} {text!r}: local:N needs a worker count from 1 to {MAX_LOCAL_WORKERS}"
            )
        return DaskTarget(local_workers=int(count))
    if _ADDRESS.match(text) and 0 < int(text.rsplit(":", 1)[1]) < 65536:
        return DaskTarget(address=text)
    raise ClusterError(f"{option} {text!r}: expected local:N or a scheduler tcp://host:port")


def target_from_env(environ: Mapping[str, str] | None = None) -> DaskTarget | None:
    """The cluster ``TWIN_DASK_SCHEDULER`` names (None when unset or empty); a bad value
    is a ClusterError naming the variable."""
    text = (os.environ if environ is None else environ).get(SCHEDULER_ENV, "").strip()
    return parse_target(text, SCHEDULER_ENV) if text else None


@contextmanager
def open_client(target: DaskTarget, option: str = OPTION) -> Iterator[Client]:
    """A client on ``target``; a local cluster is started on 127.0.0.1 and closed on
    exit."""
    if target.local_workers is not None:
        # Processes, one thread each: JAX's compiled rollout is not shared between
        # threads of one worker, and a process can be lost (and its chunks re-run) alone.
        with (
            LocalCluster(
                n_workers=target.local_workers,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                # The scheduler's HTTP server (dashboard, health) on a free loopback
                # port: distributed starts it even when told None, then on 8787.
                dashboard_address="127.0.0.1:0",
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
        return
    try:
        client = Client(target.address, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        raise ClusterError(
            f"{option} {target.address}: cannot reach the scheduler ({exc})"
        ) from None
    with client:
        yield client


def run_chunk(
    params: list[Params], n_records: int, every: int, size: int, segments: int, x64: bool
) -> tuple[list[TwinState], np.ndarray, np.ndarray]:
    """One chunk on a worker: padded to ``size`` as ``run_batch`` pads its last chunk,
    advanced, the padding dropped; host arrays back."""
    # The worker's JAX must type the arrays as the caller's did (int64 steps under x64).
    jax.config.update("jax_enable_x64", x64)
    real = len(params)
    padded = params + [params[-1]] * (size - real)
    finals, means, maxes = run_batch(padded, n_records, every, size, None, segments)
    return jax.device_get(finals[:real]), means[:real], maxes[:real]


class DaskRunner:
    """A ``BatchRunner`` that sends each chunk of variants to ``client``'s workers and
    reports progress (variants done) as chunks finish, in whatever order they finish."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def __call__(
        self,
        params: Sequence[Params],
        n_records: int,
        every: int,
        chunk: int | None = None,
        progress: Callable[[float], None] | None = None,
        segments: int = 1,
    ) -> tuple[list[TwinState], np.ndarray, np.ndarray]:
        size = chunk_size(params, chunk)
        x64 = bool(jax.config.read("jax_enable_x64"))
        study = uuid.uuid4().hex[:12]
        futures = {}
        for index, start in enumerate(range(0, len(params), size)):
            part = list(params[start : start + size])
            future = self.client.submit(
                run_chunk, part, n_records, every, size, segments, x64,
                key=f"study-{study}-chunk-{index}", pure=False,
            )  # fmt: skip
            futures[future.key] = (index, future)
        parts: dict[int, tuple[list[TwinState], np.ndarray, np.ndarray]] = {}
        done = 0
        for future in as_completed([f for _, f in futures.values()]):
            index = futures[future.key][0]
            parts[index] = future.result()
            future.release()
            done += len(parts[index][0])
            if progress:
                progress(done)
        ordered = [parts[i] for i in range(len(parts))]
        finals = [state for part in ordered for state in part[0]]
        means = np.concatenate([part[1] for part in ordered])
        maxes = np.concatenate([part[2] for part in ordered])
        return finals, means, maxes


def run_study_on_dask(
    client: Client,
    base_site: Site,
    spec: StudySpec,
    *,
    chunk: int | None = None,
    progress: Callable[[float, int], None] | None = None,
    segments: int = 1,
    variants: list[tuple[str, dict[str, Any], Site]] | None = None,
) -> StudyResult:
    """``run_study`` with its chunks of ``chunk`` variants run on ``client``'s workers."""
    return run_study(
        base_site,
        spec,
        progress=progress,
        chunk=chunk,
        segments=segments,
        variants=variants,
        runner=DaskRunner(client),
    )


def run_study_on_target(
    target: DaskTarget, base_site: Site, spec: StudySpec, **kwargs: Any
) -> StudyResult:
    """``run_study_on_dask`` on a client opened for this study alone (a service that
    holds no connection between studies, so a restarted scheduler costs nothing)."""
    with open_client(target, SCHEDULER_ENV) as client:
        return run_study_on_dask(client, base_site, spec, **kwargs)


def run_monte_carlo_on_target(
    target: DaskTarget, site: Site, spec: MonteCarloSpec, **kwargs: Any
) -> MonteCarloResult:
    """A failure study's chunks on the scheduler ``target`` names, on a client opened for
    this study alone (as ``run_study_on_target``)."""
    with open_client(target, SCHEDULER_ENV) as client:
        return run_monte_carlo(site, spec, runner=DaskRunner(client), **kwargs)
