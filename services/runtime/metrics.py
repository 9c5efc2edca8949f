"""Prometheus metrics of the twin's services: every name, type, unit and label is declared
here, once (``CATALOG``); docs/metrics.md is generated from it (``python -m
services.runtime.metrics``) and a test keeps the two equal.

Names follow the Prometheus conventions: base units in the name (``_watts``, ``_celsius``,
``_seconds``, ``_grams``), counters end in ``_total``. Every service serves them on
``TWIN_METRICS_ADDRESS`` (``/metrics``, plain HTTP) beside its health port.

family (labels)                                       type       from
grpc_server_started_total (grpc_service, grpc_method,  counter    the gRPC interceptor
  grpc_type)
grpc_server_handled_total (... grpc_code)             counter    the gRPC interceptor
grpc_server_handling_seconds (grpc_service, ...)      histogram  the gRPC interceptor
twin_service_info (service, site, instance_id)        gauge      Service
twin_bus_messages_garbled_total (type)                counter    codec.decode
twin_bus_messages_rejected_total (reason)             counter    codec.reject
twin_clock_ticks_total (site)                         counter    Clock
twin_clock_tick_duration_seconds (site)               histogram  Clock
twin_historian_batches_total (writer)                 counter    writer stats
twin_historian_rows_total (writer)                    counter    writer stats
twin_historian_write_retries_total (writer)           counter    writer stats
twin_historian_acked_messages_total (writer)          counter    writer stats
twin_historian_consumer_pending_messages (writer)     gauge      JetStream num_pending
twin_historian_lag_seconds (writer)                   gauge      writer stats
twin_historian_batch_duration_seconds (writer)        histogram  writer
twin_gateway_points_accepted_total                    counter    gateway stats
twin_gateway_points_rejected_total (reason)           counter    gateway stats
twin_gateway_<stat>_total                             counter    gateway stats
twin_monitor_deviation_events_total (site)            counter    residual monitor
twin_deviations_open (site, run, cause)               gauge      snapshot
twin_run_state (site, run, state)                     gauge      snapshot
twin_run_step, _time_seconds, _real_time_factor       gauge      snapshot
twin_run_<total><unit> (site, run)                    gauge      snapshot totals
twin_site_<quantity><unit> (site, run)                gauge      snapshot quantities
twin_site_interconnect_limit_watts (site, run)        gauge      the run's site file
twin_site_gpu_throttle_start_celsius (site, run)      gauge      the run's site file
twin_site_facility_supply_setpoint_celsius (...)      gauge      the run's site file

``twin_site_*`` gauges carry the values of the same ``SiteSnapshot`` that ``GetSnapshot``
returns, read when Prometheus scrapes: one per quantity of the contract
(twin_core/contract.py), its name and scale derived from the quantity's unit
(``UNITS``), so a quantity added to the contract is exported without an edit here.

Counted values that a component already keeps (the gateway's ``GetStats``, the
historian writers' stats) are read from those counters when scraped, never counted twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.metrics_core import Metric as _Family
from prometheus_client.registry import Collector

from twin.twin.v1 import deviation_pb2, snapshot_pb2
from twin_core import contract

if TYPE_CHECKING:
    from twin_core.site import Site

log = logging.getLogger(__name__)

Kind = Literal["counter", "gauge", "histogram"]


@dataclass(frozen=True)
class Metric:
    """One metric family: ``name`` as exposed (counters with ``_total``)."""

    name: str
    kind: Kind
    doc: str
    labels: tuple[str, ...] = ()

    @property
    def family(self) -> str:
        """The family name (a counter's without ``_total``, as the exposition's TYPE)."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name


RUN = ("site", "run")
GRPC = ("grpc_service", "grpc_method", "grpc_type")

# ---- the quantities of the contract: unit -> (name suffix stripped, suffix added, scale)
UNITS: dict[str, tuple[str, str, float]] = {
    "W": ("_w", "_watts", 1.0),
    "W/s": ("_w_per_s", "_watts_per_second", 1.0),
    "C": ("_c", "_celsius", 1.0),
    "1": ("_fraction", "_ratio", 1.0),
    "units": ("", "", 1.0),
    "GPUs": ("", "", 1.0),
    "PFLOP/s": ("_pflops", "_flop_per_second", 1e15),
    "m3/s": ("_m3_per_s", "_cubic_meters_per_second", 1.0),
    "USD/s": ("_usd_per_s", "_usd_per_second", 1.0),
    "t/s": ("_t_per_s", "_grams_per_second", 1e6),
    "USD/MWh": ("_usd_per_mwh", "_usd_per_joule", 1 / 3.6e9),
    "g/kWh": ("_g_per_kwh", "_grams_per_joule", 1 / 3.6e6),
}
# The run totals (time integrals of rates): the rate's unit -> (stripped, added, scale).
TOTAL_UNITS: dict[str, tuple[str, str, float]] = {
    "USD/s": ("_usd", "_usd", 1.0),
    "t/s": ("_t", "_grams", 1e6),
    "m3/s": ("_m3", "_cubic_meters", 1.0),
}


@dataclass(frozen=True)
class Scaled:
    """A snapshot value exported as ``metric`` = value * ``scale``."""

    key: str  # the quantity (or total) name in the snapshot
    metric: Metric
    scale: float


def _derive(name: str, unit: str, table: dict[str, tuple[str, str, float]], prefix: str):
    if unit not in table:
        raise ValueError(
            f"{name}: unit {unit!r} has no Prometheus name in services.runtime.metrics"
        )
    strip, suffix, scale = table[unit]
    if strip and not name.endswith(strip) and unit != "1":  # pue, soc: no suffix to strip
        raise ValueError(f"{name}: a quantity in {unit!r} must be named *{strip}")
    stem = name.removesuffix(strip) if strip else name
    return f"{prefix}{stem}{suffix}", scale


def _quantity_metrics() -> tuple[Scaled, ...]:
    out = []
    for q in contract.QUANTITIES:
        name, scale = _derive(q.name, q.unit, UNITS, "twin_site_")
        doc = f"{q.doc} (contract {q.name}" + (f" x {scale:g})" if scale != 1 else ")")
        out.append(Scaled(q.name, Metric(name, "gauge", doc, RUN), scale))
    return tuple(out)


def _total_metrics() -> tuple[Scaled, ...]:
    out = []
    for total, rate in contract.TOTALS.items():
        unit = contract.QUANTITY[rate].unit
        name, scale = _derive(total, unit, TOTAL_UNITS, "twin_run_")
        doc = f"{total}: {rate} integrated since the run's start" + (
            f" (x {scale:g})" if scale != 1 else ""
        )
        out.append(Scaled(total, Metric(name, "gauge", doc, RUN), scale))
    return tuple(out)


QUANTITY_METRICS = _quantity_metrics()
TOTAL_METRICS = _total_metrics()

# ---- the run, its site's limits (what the alerts compare the quantities with)
RUN_STATE = Metric("twin_run_state", "gauge", "1 for the run's state", (*RUN, "state"))
RUN_STEP = Metric("twin_run_step", "gauge", "coupling intervals since the run's start", RUN)
RUN_TIME = Metric("twin_run_time_seconds", "gauge", "simulated seconds since the start", RUN)
RUN_PACE = Metric(
    "twin_run_real_time_factor", "gauge", "simulated seconds per wall-clock second", RUN
)
DEVIATIONS_OPEN = Metric(
    "twin_deviations_open", "gauge", "deviations raised and not cleared", (*RUN, "cause")
)
INTERCONNECT_LIMIT = Metric(
    "twin_site_interconnect_limit_watts", "gauge", "the site's interconnect limit", RUN
)
THROTTLE_START = Metric(
    "twin_site_gpu_throttle_start_celsius",
    "gauge",
    "lowest GPU die temperature at which a rack type starts throttling",
    RUN,
)
SUPPLY_SETPOINT = Metric(
    "twin_site_facility_supply_setpoint_celsius", "gauge", "facility water supply setpoint", RUN
)
RUN_METRICS = (RUN_STATE, RUN_STEP, RUN_TIME, RUN_PACE, DEVIATIONS_OPEN)
LIMIT_METRICS = (INTERCONNECT_LIMIT, THROTTLE_START, SUPPLY_SETPOINT)
RUN_STATES = {
    snapshot_pb2.RUN_STATE_RUNNING: "running",
    snapshot_pb2.RUN_STATE_PAUSED: "paused",
    snapshot_pb2.RUN_STATE_STOPPED: "stopped",
    snapshot_pb2.RUN_STATE_FAILED: "failed",
}
CAUSES = {
    value: name.removeprefix("DEVIATION_CAUSE_").lower()
    for name, value in deviation_pb2.DeviationCause.items()
}

# ---- the historian writers (label writer: states, measurements)
HISTORIAN_STATS = {  # metric -> the stats field it reads, per writer
    Metric("twin_historian_batches_total", "counter", "committed writes", ("writer",)): {
        "states": "batches",
        "measurements": "batches",
    },
    Metric(
        "twin_historian_rows_total",
        "counter",
        "site steps (states) or measurements written",
        ("writer",),
    ): {"states": "steps", "measurements": "measurements"},
    Metric(
        "twin_historian_write_retries_total",
        "counter",
        "database writes that failed and were retried",
        ("writer",),
    ): {"states": "db_failures", "measurements": "db_failures"},
    Metric(
        "twin_historian_acked_messages_total",
        "counter",
        "bus messages acked after their rows were committed",
        ("writer",),
    ): {"states": "acked", "measurements": "acked"},
    Metric(
        "twin_historian_consumer_pending_messages",
        "gauge",
        "messages of the durable consumer not yet delivered (JetStream num_pending)",
        ("writer",),
    ): {"states": "pending", "measurements": "pending"},
}
HISTORIAN_LAG = Metric(
    "twin_historian_lag_seconds",
    "gauge",
    "age of the newest committed message while messages are pending (0 when caught up)",
    ("writer",),
)

# ---- the gateway: GetStats' counters, read as they are
GATEWAY_STATS = {
    "accepted": Metric("twin_gateway_points_accepted_total", "counter", "field samples accepted"),
    "rejected": Metric(
        "twin_gateway_points_rejected_total", "counter", "field samples rejected", ("reason",)
    ),
    "published": Metric(
        "twin_gateway_values_published_total", "counter", "entity values sent (fresh and held)"
    ),
    "held": Metric(
        "twin_gateway_values_held_total", "counter", "of those, no new sample within the tick"
    ),
    "substituted": Metric(
        "twin_gateway_values_substituted_total",
        "counter",
        "entity-ticks left to the model (all its points stale)",
    ),
    "ticks": Metric("twin_gateway_ticks_total", "counter", "clock ticks served"),
    "ahead": Metric(
        "twin_gateway_values_ahead_total", "counter", "entity values sent between ticks"
    ),
    "batches": Metric("twin_gateway_batches_total", "counter", "MeasurementBatch messages sent"),
    "restarts": Metric(
        "twin_gateway_adapter_restarts_total", "counter", "field adapters restarted after a failure"
    ),
}
MONITOR_EVENTS = Metric(
    "twin_monitor_deviation_events_total",
    "counter",
    "deviation events (raised or cleared) published",
    ("site",),
)

# ---- pushed: counted or observed where they happen
GRPC_STARTED = Metric("grpc_server_started_total", "counter", "RPCs started", GRPC)
GRPC_HANDLED = Metric(
    "grpc_server_handled_total", "counter", "RPCs completed, by status", (*GRPC, "grpc_code")
)
GRPC_SECONDS = Metric(
    "grpc_server_handling_seconds", "histogram", "RPC latency to the final status", GRPC
)
SERVICE_INFO = Metric(
    "twin_service_info", "gauge", "1 per running service", ("service", "site", "instance_id")
)
BUS_GARBLED = Metric(
    "twin_bus_messages_garbled_total", "counter", "bus payloads that do not decode", ("type",)
)
BUS_REJECTED = Metric(
    "twin_bus_messages_rejected_total",
    "counter",
    "decoded bus messages refused by a check (skipped)",
    ("reason",),
)
CLOCK_TICKS = Metric("twin_clock_ticks_total", "counter", "coupling intervals completed", ("site",))
CLOCK_TICK_SECONDS = Metric(
    "twin_clock_tick_duration_seconds",
    "histogram",
    "a tick from its sending to the last domain's state",
    ("site",),
)
HISTORIAN_BATCH_SECONDS = Metric(
    "twin_historian_batch_duration_seconds",
    "histogram",
    "a batch from the first write attempt to its commit (retries included)",
    ("writer",),
)

CATALOG: tuple[Metric, ...] = (
    GRPC_STARTED,
    GRPC_HANDLED,
    GRPC_SECONDS,
    SERVICE_INFO,
    BUS_GARBLED,
    BUS_REJECTED,
    CLOCK_TICKS,
    CLOCK_TICK_SECONDS,
    *HISTORIAN_STATS,
    HISTORIAN_LAG,
    HISTORIAN_BATCH_SECONDS,
    *GATEWAY_STATS.values(),
    MONITOR_EVENTS,
    *RUN_METRICS,
    *(s.metric for s in TOTAL_METRICS),
    *LIMIT_METRICS,
    *(s.metric for s in QUANTITY_METRICS),
)
BY_NAME: dict[str, Metric] = {m.name: m for m in CATALOG}
if len(BY_NAME) != len(CATALOG):  # two quantities mapped to one name
    raise RuntimeError("services.runtime.metrics: duplicate metric names in CATALOG")


def exposed_names() -> set[str]:
    """Every series name a scrape can show: families, and a histogram's
    ``_bucket``/``_sum``/``_count`` series."""
    names = set()
    for m in CATALOG:
        names.add(m.name)
        if m.kind == "histogram":
            names |= {f"{m.name}_bucket", f"{m.name}_sum", f"{m.name}_count"}
    return names


# ------------------------------------------------------------------ pushed metrics

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def _histogram(m: Metric) -> Histogram:
    return Histogram(m.name, m.doc, m.labels, buckets=LATENCY_BUCKETS)


grpc_started = Counter(GRPC_STARTED.name, GRPC_STARTED.doc, GRPC_STARTED.labels)
grpc_handled = Counter(GRPC_HANDLED.name, GRPC_HANDLED.doc, GRPC_HANDLED.labels)
grpc_seconds = _histogram(GRPC_SECONDS)
service_info = Gauge(SERVICE_INFO.name, SERVICE_INFO.doc, SERVICE_INFO.labels)
bus_garbled = Counter(BUS_GARBLED.name, BUS_GARBLED.doc, BUS_GARBLED.labels)
bus_rejected = Counter(BUS_REJECTED.name, BUS_REJECTED.doc, BUS_REJECTED.labels)
clock_ticks = Counter(CLOCK_TICKS.name, CLOCK_TICKS.doc, CLOCK_TICKS.labels)
clock_tick_seconds = _histogram(CLOCK_TICK_SECONDS)
historian_batch_seconds = _histogram(HISTORIAN_BATCH_SECONDS)


# ------------------------------------------------------------------ pulled metrics

Sample = tuple[Metric, dict[str, str], float]
Provider = Callable[[], Iterable[Sample]]


class Pulled(Collector):
    """The metrics read when Prometheus scrapes, from providers the services add (a
    snapshot, a stats object). One collector per process: two twins in one test process
    add two providers, and their samples share each family."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = tuple(families)
        self._providers: dict[int, Provider] = {}
        self._lock = threading.Lock()
        self._next = 0

    def add(self, provider: Provider) -> Callable[[], None]:
        """Add ``provider``; returns the function that removes it."""
        with self._lock:
            key, self._next = self._next, self._next + 1
            self._providers[key] = provider

        def remove() -> None:
            with self._lock:
                self._providers.pop(key, None)

        return remove

    def describe(self) -> Iterator[_Family]:
        for m in self.families:
            yield _Family(m.family, m.doc, m.kind)

    def collect(self) -> Iterator[_Family]:
        out = {m.name: _Family(m.family, m.doc, m.kind) for m in self.families}
        with self._lock:
            providers = list(self._providers.values())
        for provider in providers:
            try:
                samples = list(provider())
            except Exception:  # a scrape must not fail because one source did
                log.exception("metrics provider failed")
                continue
            for metric, labels, value in samples:
                out[metric.name].add_sample(metric.name, labels, float(value))
        yield from out.values()


# Counted where they happen (the objects above); every other family is pulled.
PUSHED = (GRPC_STARTED, GRPC_HANDLED, GRPC_SECONDS, SERVICE_INFO, BUS_GARBLED, BUS_REJECTED)
PUSHED += (CLOCK_TICKS, CLOCK_TICK_SECONDS, HISTORIAN_BATCH_SECONDS)
pulled = Pulled(m for m in CATALOG if m not in PUSHED)
REGISTRY.register(pulled)


@dataclass(frozen=True)
class Limits:
    """What the alerts compare the live quantities with, from the run's site file."""

    interconnect_limit_w: float
    gpu_throttle_start_c: float
    facility_supply_setpoint_c: float

    @classmethod
    def of(cls, site: Site) -> Limits:
        """From a ``twin_core.site.Site``: the lowest throttle start of the rack types the
        halls use."""
        used = {hall.rack_type for hall in site.halls}
        return cls(
            interconnect_limit_w=site.power.interconnect_limit_mw * 1e6,
            gpu_throttle_start_c=min(site.rack_types[t].thermal.throttle_start_c for t in used),
            facility_supply_setpoint_c=site.cooling.supply_c,
        )


def snapshot_samples(snapshot: snapshot_pb2.SiteSnapshot, limits: Limits | None) -> list[Sample]:
    """The gauges of one snapshot, labelled with its site and run."""
    labels = {"site": snapshot.site_id, "run": snapshot.run_id}
    out: list[Sample] = [
        (RUN_STEP, labels, snapshot.step),
        (RUN_TIME, labels, snapshot.time_s),
        (RUN_PACE, labels, snapshot.real_time_factor),
    ]
    for value, state in RUN_STATES.items():
        out.append((RUN_STATE, {**labels, "state": state}, float(snapshot.state == value)))
    for value, cause in CAUSES.items():
        n = sum(1 for d in snapshot.deviations if d.cause == value)
        out.append((DEVIATIONS_OPEN, {**labels, "cause": cause}, n))
    for group, values in (
        (QUANTITY_METRICS, snapshot.quantities),
        (TOTAL_METRICS, snapshot.totals),
    ):
        for scaled in group:
            if scaled.key in values:
                out.append((scaled.metric, labels, values[scaled.key] * scaled.scale))
    if limits is not None and snapshot.run_id:
        out += [
            (INTERCONNECT_LIMIT, labels, limits.interconnect_limit_w),
            (THROTTLE_START, labels, limits.gpu_throttle_start_c),
            (SUPPLY_SETPOINT, labels, limits.facility_supply_setpoint_c),
        ]
    return out


def historian_samples(writers: dict[str, Any], now: float) -> list[Sample]:
    """The historian writers' own counters (``WriterStats``, ``MeasurementStats``: fields
    named in ``HISTORIAN_STATS``, plus ``newest_committed_s``, the stream time of the
    newest message committed) by writer name; ``now``: the wall clock (s)."""
    out: list[Sample] = []
    for metric, fields in HISTORIAN_STATS.items():
        for writer, stats in writers.items():
            out.append((metric, {"writer": writer}, getattr(stats, fields[writer])))
    for writer, stats in writers.items():
        newest: float | None = stats.newest_committed_s
        lag = 0.0 if newest is None or stats.pending <= 0 else max(0.0, now - newest)
        out.append((HISTORIAN_LAG, {"writer": writer}, lag))
    return out


def gateway_samples(stats: dict) -> list[Sample]:
    """The gateway's GetStats numbers (``Gateway.stats()``) as its counters."""
    out: list[Sample] = []
    for key, metric in GATEWAY_STATS.items():
        value = stats[key]
        if isinstance(value, dict):
            out += [(metric, {"reason": reason}, n) for reason, n in sorted(value.items())]
        else:
            out.append((metric, {}, value))
    return out


def markdown() -> str:
    """docs/metrics.md: the catalog as a table."""
    lines = [
        "# Metrics",
        "",
        "Every service serves Prometheus metrics on `TWIN_METRICS_ADDRESS` (`/metrics`).",
        "Generated from `services/runtime/metrics.py` (`python -m services.runtime.metrics`);",
        "the alert rules are in `charts/ai-factory-twin/files/alerts.yaml`.",
        "",
        "| metric | type | labels | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for m in CATALOG:
        labels = ", ".join(m.labels) or "-"
        lines.append(f"| `{m.name}` | {m.kind} | {labels} | {m.doc.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


class MetricsServer:
    """``/metrics`` over plain HTTP on ``address`` (host:port; port 0: any free one), in
    a thread of its own: a scrape never waits on the service's event loop."""

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        self.address = address
        try:
            self._httpd, self._thread = start_http_server(int(port), host.strip("[]"))
        except OSError as exc:
            raise OSError(f"cannot bind the metrics server to {address}: {exc}") from exc
        self.port: int = self._httpd.server_address[1]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


if __name__ == "__main__":
    print(markdown(), end="")
