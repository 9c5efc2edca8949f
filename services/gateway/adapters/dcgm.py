"""NVIDIA DCGM exporter: Prometheus text scraped every ``interval_s`` from each URL.

Point ids: ``<metric>/<Hostname>/<gpu>``, e.g. ``DCGM_FI_DEV_POWER_USAGE/node-a/3``, for
DCGM_FI_DEV_POWER_USAGE (W), DCGM_FI_DEV_GPU_TEMP (degC),
DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION (mJ, a counter) and DCGM_FI_PROF_GR_ENGINE_ACTIVE
(0..1). The energy counter also gives ``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION_RATE/...``
in mJ/s between two scrapes (unit ``mJ/s`` in the map: the mean power over the interval,
which a power sample cannot give). The exporter has no timestamps: a sample's time is
the scrape's. A dead or slow endpoint (``timeout_s``) is counted (``unreachable`` /
``timeout``) and retried with backoff doubling up to ``max_backoff_s``. The URLs'
scrapes are spread evenly over the interval, and at most ``max_in_flight`` are under way
at once (requested, or fetched and not yet read): a gateway short of CPU then scrapes
later instead of holding fetched pages whose values age while they wait for it (at
Fairwater size every one of the 240 pages had been fetched and was waiting, 5-17 s).
A slow endpoint holds its slot for up to ``timeout_s``; backoff keeps that rare.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from itertools import compress, repeat
from typing import cast

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from services.gateway.pointmap import DcgmSource
from services.gateway.reading import Emit, Reading, Scan
from services.gateway.turns import Turns

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
    return DcgmParser(source).parse(text, now)


class DcgmParser:
    """Prometheus text -> Readings. A page in the exporter's plain form (``_SAMPLE``,
    ``_COMMENT``) is read with a cache of its lines: a line seen before is only looked
    up by everything before its last space (an exporter sends the same lines at every
    scrape, with new values); any other page goes through prometheus_client's parser,
    which gives the same samples for the plain form, ~30x slower."""

    def __init__(self, source: str, cache_size: int = 2_000_000) -> None:
        self.source = source
        self.cache_size = cache_size
        # A checked line up to its last space -> its point id; "" for a sample the
        # gateway does not read; False for a line without a value (a comment, or blank:
        # any last word makes it a valid comment).
        self._lines: dict[str, str | bool] = {"": False}

    def parse(self, text: str, now: float) -> list[Reading]:
        read = self.read(text, now)
        if isinstance(read, Scan):
            return [Reading(read.source, point, value, now) for point, value in read.points]
        return read

    def read(self, text: str, now: float) -> Scan | list[Reading]:
        """A Scan of a page in the plain form (all its samples at ``now``), else the
        full parser's Readings (which may carry their own timestamps)."""
        fast = self._fast(text)
        if fast is None:
            return _parse_full(self.source, text, now)
        return Scan(self.source, now, fast)

    def _fast(self, text: str) -> list[tuple[str, float]] | None:
        """(point, value) of a page in the plain form; None for any other page. A page
        of lines seen before runs no Python bytecode per line: they are split, looked up,
        checked and converted by ``map``, ``compress`` and one regular expression."""
        lines = list(map(str.strip, text.split("\n")))
        heads, seps, tails = zip(*map(str.rpartition, lines, repeat(" ")), strict=True)
        if seps.count("") != lines.count(""):
            return None  # a line with no space that is not blank: not `sample value`
        points = list(map(self._lines.get, heads))
        if None in points:  # lines not seen before
            for k, point in enumerate(points):
                if point is None:
                    if (checked := self._check(lines[k], heads[k])) is None:
                        return None
                    points[k] = checked
        valued = list(map(isinstance, points, repeat(str)))  # samples, read or not
        values = list(compress(tails, valued))
        joined = "\n".join(values)
        # Plain digits, signs, dots and exponents are numbers when float() reads them
        # (the same grammar); anything else (NaN, Inf) is checked by the full pattern.
        if _NUMERALS.fullmatch(joined) is None and _VALUES.fullmatch(joined) is None:
            return None  # a sample's value not in the plain form
        try:
            numbers = list(map(float, values))
        except ValueError:
            return None
        ids = cast(list[str], list(compress(points, valued)))  # valued: the str ones
        return list(compress(zip(ids, numbers, strict=True), ids))

    def _check(self, line: str, head: str) -> str | bool | None:
        """A line not seen before (``head``: up to its last space): its point, "" for a
        sample the gateway does not read, False for a comment; None when it is not in
        the plain form. Cached by its head when any last word would do as well."""
        cache = len(self._lines) < self.cache_size
        if line[0] == "#":
            if _COMMENT.fullmatch(line) is None:
                return None
            if cache and _COMMENT_HEAD.fullmatch(head) is not None:
                self._lines[head] = False
            return False
        m = _SAMPLE.fullmatch(line)
        if m is None:
            return None
        name, labels, _ = m.groups()
        point = ""
        if name in _TOTALS or (labels is not None and "__name__" in labels):
            return None  # maybe a counter family's sample; a name given as a label
        if name in METRICS and labels is not None:
            pairs = dict(_PAIR.findall(labels))  # values hold no quote: pairs in order
            host, gpu = pairs.get("Hostname"), pairs.get("gpu")
            if host and gpu is not None:
                point = f"{name}/{host}/{gpu}"
        if cache and m.start(3) - 1 == len(head):  # one space before the value
            self._lines[head] = point
        return point


def _parse_full(source: str, text: str, now: float) -> list[Reading]:
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


# The plain form: ``# HELP name ...``, ``# TYPE name type``, other ``# `` comments, blank
# lines and samples ``name{label="value",...} value`` without escapes, spaces around the
# labels or a timestamp; not ``<metric>_total`` (a counter family of that name gives
# ``<metric>`` samples) nor a ``__name__`` label.
_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*"'
_VALUE = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?Inf|NaN")
_SAMPLE = re.compile(rf"({_NAME})(?:\{{((?:{_LABEL}(?:,{_LABEL})*)?)\}})?[ \t]+({_VALUE.pattern})")
_COMMENT = re.compile(
    rf"#(?:[ \t]+HELP[ \t]+{_NAME}(?:[ \t].*)?|[ \t]+TYPE[ \t]+{_NAME}[ \t]+\S+"
    r"|[ \t]+(?!HELP\b|TYPE\b)\S.*|[ \t]*)"
)
# Every value of a page's samples, one a line.
_VALUES = re.compile(rf"(?:(?:{_VALUE.pattern})\n)*(?:{_VALUE.pattern})")
_NUMERALS = re.compile(r"[0-9.eE+\-\n]*")
# A comment's head (all but its last word) that makes a valid comment with any last word.
_COMMENT_HEAD = re.compile(
    rf"#[ \t]+(?:HELP[ \t]+{_NAME}(?:[ \t].*)?|TYPE[ \t]+{_NAME}|(?!HELP\b|TYPE\b)\S.*)"
)
_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"')
_TOTALS = frozenset(m + "_total" for m in METRICS)


class DcgmAdapter:
    def __init__(self, name: str, cfg: DcgmSource) -> None:
        self.name, self.cfg = name, cfg
        self._energy: dict[str, tuple[float, float]] = {}  # point -> (mJ, time)
        self.parser = DcgmParser(name)
        self.turns = Turns()
        self.slots = asyncio.Semaphore(cfg.max_in_flight)
        self.scrapes = 0

    async def run(self, emit: Emit) -> None:
        # aiohttp, not httpx: it reads a 1,728-sample page in ~1/7 of the CPU (~2 µs a
        # sample less), which at a site's scale is a large part of the gateway's core.
        # ``total``: one bound on the whole request (connect, headers and body).
        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as client:
            n = len(self.cfg.urls)
            await asyncio.gather(
                *(self._poll(client, url, emit, i / n) for i, url in enumerate(self.cfg.urls))
            )

    async def _poll(
        self, client: aiohttp.ClientSession, url: str, emit: Emit, phase: float
    ) -> None:
        """Scrape ``url`` every interval, starting ``phase`` of an interval late: the
        endpoints are spread over the interval, not all scraped (and all their samples
        checked) in one burst. A scrape waits for one of ``slots`` before it asks."""
        await asyncio.sleep(phase * self.cfg.interval_s)
        wait = self.cfg.interval_s
        while True:
            started = time.monotonic()
            async with self.slots:
                problem = await self._scrape(client, url, emit)
            if problem is None:
                wait = self.cfg.interval_s
            else:
                emit(Reading(self.name, url, None, time.time(), good=False, problem=problem))
                log.warning("DCGM scrape failed", extra={"url": url, "problem": problem})
                wait = min(max(wait, self.cfg.interval_s) * 2, self.cfg.max_backoff_s)
            await asyncio.sleep(max(0.0, wait - (time.monotonic() - started)))

    async def _scrape(self, client: aiohttp.ClientSession, url: str, emit: Emit) -> str | None:
        try:
            async with client.get(url, raise_for_status=True) as response:
                body = await response.read()
        except TimeoutError:  # aiohttp's timeouts are TimeoutErrors (some ClientErrors too)
            return "timeout"
        except (aiohttp.ClientError, ValueError):  # ValueError: a URL aiohttp cannot use
            return "unreachable"
        now = time.time()
        await self.turns.wait()  # one page a loop iteration (services/gateway/turns.py)
        try:
            text = body.decode()  # the exposition format is UTF-8
            read = self.parser.read(text, now)
        except ValueError:  # UnicodeDecodeError is one
            return "malformed"
        self.scrapes += 1
        energy = ENERGY + "/"
        if isinstance(read, Scan):
            emit(read)
            if energy in text:
                for point, value in read.points:
                    if point.startswith(energy):
                        self._rate(Reading(self.name, point, value, now), emit)
            return None
        for r in read:
            emit(r)
            if r.point.startswith(energy):
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
