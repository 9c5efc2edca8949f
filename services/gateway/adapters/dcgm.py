"""NVIDIA DCGM exporter: Prometheus text scraped every ``interval_s`` from each URL.

Point ids: ``<metric>/<Hostname>/<gpu>``, e.g. ``DCGM_FI_DEV_POWER_USAGE/node-a/3``, for
DCGM_FI_DEV_POWER_USAGE (W), DCGM_FI_DEV_GPU_TEMP (degC),
DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION (mJ, a counter) and DCGM_FI_PROF_GR_ENGINE_ACTIVE
(0..1). The energy counter also gives ``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION_RATE/...``
in mJ/s between two scrapes (unit ``mJ/s`` in the map: the mean power over the interval,
which a power sample cannot give). The exporter has no timestamps: a sample's time is
the scrape's. A dead or slow endpoint (``timeout_s``) is counted (``unreachable`` /
``timeout``) and retried with backoff doubling up to ``max_backoff_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from services.gateway.pointmap import DcgmSource
from services.gateway.reading import Emit, Reading

log = logging.getLogger(__name__)

METRICS = frozenset(
    {
        "DCGM_FI_DEV_POWER_USAGE",
        "DCGM_FI_DEV_GPU_TEMP",
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
    }
)
ENERGY = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"


def parse_dcgm(source: str, text: str, now: float) -> list[Reading]:
    """The DCGM samples of one scrape. ValueError when the text is not Prometheus text."""
    out: list[Reading] = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            if family.type == "counter" and name == family.name + "_total":
                name = family.name  # the parser names counter samples <family>_total
            if name not in METRICS:
                continue
            host, gpu = sample.labels.get("Hostname"), sample.labels.get("gpu")
            if not host or gpu is None:
                continue  # not a per-GPU sample
            stamp = sample.timestamp if sample.timestamp is not None else now
            point = f"{name}/{host}/{gpu}"
            out.append(Reading(source, point, float(sample.value), float(stamp)))
    return out


class DcgmAdapter:
    def __init__(self, name: str, cfg: DcgmSource) -> None:
        self.name, self.cfg = name, cfg
        self._energy: dict[str, tuple[float, float]] = {}  # point -> (mJ, time)
        self.scrapes = 0

    async def run(self, emit: Emit) -> None:
        timeout = httpx.Timeout(self.cfg.timeout_s)
        async with httpx.AsyncClient(timeout=timeout) as client:
            await asyncio.gather(*(self._poll(client, url, emit) for url in self.cfg.urls))

    async def _poll(self, client: httpx.AsyncClient, url: str, emit: Emit) -> None:
        wait = self.cfg.interval_s
        while True:
            started = time.monotonic()
            problem = await self._scrape(client, url, emit)
            if problem is None:
                wait = self.cfg.interval_s
            else:
                emit(Reading(self.name, url, None, time.time(), good=False, problem=problem))
                log.warning("DCGM scrape failed", extra={"url": url, "problem": problem})
                wait = min(max(wait, self.cfg.interval_s) * 2, self.cfg.max_backoff_s)
            await asyncio.sleep(max(0.0, wait - (time.monotonic() - started)))

    async def _scrape(self, client: httpx.AsyncClient, url: str, emit: Emit) -> str | None:
        try:
            response = await client.get(url)
            response.raise_for_status()
        except httpx.TimeoutException:
            return "timeout"
        except httpx.HTTPError:
            return "unreachable"
        now = time.time()
        try:
            readings = parse_dcgm(self.name, response.text, now)
        except ValueError:
            return "malformed"
        self.scrapes += 1
        for r in readings:
            emit(r)
            if r.point.startswith(ENERGY + "/"):
                self._rate(r, emit)
        return None

    def _rate(self, r: Reading, emit: Emit) -> None:
        if (value := r.value) is None:  # a counter without a value has no rate
            return
        last = self._energy.get(r.point)
        self._energy[r.point] = (value, r.time_s)
        if last is None or r.time_s <= last[1] or value < last[0]:  # first, or a reset
            return
        rate = (value - last[0]) / (r.time_s - last[1])
        point = r.point.replace(ENERGY, ENERGY + "_RATE", 1)
        emit(Reading(self.name, point, rate, r.time_s, unit="mJ/s"))
