"""Who may publish and subscribe to what on the twin's bus: one NATS identity per service.

The table below is the one source of the permissions. ``render_authorization`` makes the
``authorization { users = [...] }`` block of a nats-server config for a site (passwords or
nkeys read from environment variables, never written into the file); the Helm chart
renders the same block from ``charts/ai-factory-twin/files/nats-permissions.yaml``,
which ``python -m services.bus_permissions --chart`` writes from this table (a test fails
when the two differ).

Why each grant (the calls are in services/node.py, clock.py, serve.py, historian/):

- a domain X publishes its state ``twin.<site>.X.state``, its restart snapshot in the run
  bucket (``$KV.twin-<site>-run.X``), its live configuration in the config bucket, and
  replay requests to the peers it reads; it subscribes to the clock, its peers' states,
  its own replay subject (answering through ``allow_responses``) and, for the measured
  domains, ``telemetry.<site>.>``. It may create the run bucket (start-up order is free).
- the twin (clock, APIs) alone publishes ``twin.<site>.clock`` and writes the run key;
  it declares the history stream and both buckets and reads every domain's state and
  the site's telemetry (the residual monitor), publishing deviations on the events.
- the historian declares the history stream and its two durable consumers (states and
  events; telemetry, stored as measurements), pulls and acks.
- the gateway (services/gateway/) subscribes to the clock (it publishes at each tick),
  to the BMS points nats-server's MQTT listener maps to ``BMS.v1.PUB.>`` (MQTT topic
  ``BMS/v1/PUB/...``) and to its stats subject ``twin.<site>.gateway.stats`` (answering
  through ``allow_responses``); it publishes ``telemetry.<site>.>`` and reads the
  retained BMS metadata from nats-server's ``$MQTT_rmsgs`` stream with an ordered
  consumer (create it, and answer the stream's flow-control requests).
- ``bms`` (a BMS integration, an MQTT client of nats-server's MQTT listener) publishes
  ``BMS.v1.PUB.>`` only: nats-server checks an MQTT client's publishes against the
  permissions of the user it logs in as.
- ``telemetry`` (external publishers of ``MeasurementBatch``) publishes
  ``telemetry.<site>.>`` and reads nothing; ``observer`` (dashboards, the CLI) reads
  states, clock and events and publishes only requests for the gateway's stats.

Every identity receives JetStream API replies on its own inbox prefix
``_INBOX.<identity>.>`` (services connect with that prefix, see runtime/service.py), so no
identity can read another's replies.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from services.runtime.config import SITE_RE
from twin_core.contract import DOMAINS, NEEDS

SITE = "<site>"  # placeholder in the chart's file; the chart substitutes site.id
SERVICES = (*DOMAINS, "twin", "historian")
GATEWAY = "gateway"  # optional service (chart: gateway.enabled)
IDENTITIES = (*SERVICES, GATEWAY, "bms", "telemetry", "observer")
BMS_SUBJECTS = "BMS.v1.PUB.>"  # MQTT BMS/v1/PUB/# (the point map's default bms prefix)
MQTT_RETAINED_STREAM = "$MQTT_rmsgs"  # nats-server's retained MQTT messages
MEASURED_DOMAINS = ("compute", "cooling")  # subscribe to telemetry (services/node.py)
HISTORIAN_DURABLE = "historian"
MEASUREMENTS_DURABLE = "historian-measurements"
CHART_FILE = (
    Path(__file__).resolve().parents[1] / "charts" / "ai-factory-twin" / "files"
) / "nats-permissions.yaml"


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    allow_responses: bool = False  # may answer requests it received (replays)


def _js(*tails: str) -> tuple[str, ...]:
    return tuple(f"$JS.API.{tail}" for tail in tails)


def _domain(site: str, domain: str) -> Permissions:
    run, config = f"twin-{site}-run", f"twin-{site}-config"
    publish = (
        f"twin.{site}.{domain}.state",
        *(f"twin.{site}.{peer}.replay" for peer in NEEDS[domain]),
        f"$KV.{run}.{domain}",
        f"$KV.{config}.{domain}",
        *_js(
            f"STREAM.CREATE.KV_{run}",
            f"STREAM.INFO.KV_{run}",
            f"STREAM.INFO.KV_{config}",
            f"DIRECT.GET.KV_{run}.>",
            f"STREAM.MSG.GET.KV_{run}",
        ),
    )
    subscribe = (
        f"twin.{site}.clock",
        *(f"twin.{site}.{peer}.state" for peer in NEEDS[domain]),
        f"twin.{site}.{domain}.replay",
        *((f"telemetry.{site}.>",) if domain in MEASURED_DOMAINS else ()),
        f"_INBOX.{domain}.>",
    )
    return Permissions(publish, subscribe, allow_responses=True)


def _stream_api(name: str) -> tuple[str, ...]:
    return _js(f"STREAM.CREATE.{name}", f"STREAM.UPDATE.{name}", f"STREAM.INFO.{name}")


def _durable(durable: str) -> tuple[str, ...]:
    """Declare, pull from and ack one durable consumer (``<stream>.<name>``)."""
    return (
        *_js(
            f"CONSUMER.CREATE.{durable}",
            f"CONSUMER.CREATE.{durable}.>",
            f"CONSUMER.DURABLE.CREATE.{durable}",
            f"CONSUMER.INFO.{durable}",
            f"CONSUMER.MSG.NEXT.{durable}",
        ),
        f"$JS.ACK.{durable}.>",
    )


def permissions(site: str = SITE) -> dict[str, Permissions]:
    """Every identity's permissions for ``site`` (the placeholder ``<site>`` by default)."""
    if site != SITE and not SITE_RE.match(site):
        raise ValueError(f"site: {site!r} is not a site id")
    stream, run, config = f"twin-{site}", f"twin-{site}-run", f"twin-{site}-config"
    table = {domain: _domain(site, domain) for domain in DOMAINS}
    table["twin"] = Permissions(
        publish=(
            f"twin.{site}.clock",
            f"twin.{site}.events",
            f"$KV.{run}.run",  # the run in progress (put, and delete when it ends)
            *_stream_api(stream),
            *_stream_api(f"KV_{run}"),
            *_stream_api(f"KV_{config}"),
            *_js(f"DIRECT.GET.KV_{run}.>", f"STREAM.MSG.GET.KV_{run}"),
        ),
        # telemetry: the residual monitor (services/monitor/) compares it with the states
        subscribe=(f"twin.{site}.*.state", f"telemetry.{site}.>", "_INBOX.twin.>"),
    )
    table["historian"] = Permissions(
        publish=(
            *_stream_api(stream),
            *(
                grant
                for name in (HISTORIAN_DURABLE, MEASUREMENTS_DURABLE)
                for grant in _durable(f"{stream}.{name}")
            ),
        ),
        subscribe=("_INBOX.historian.>",),
    )
    table[GATEWAY] = Permissions(
        publish=(
            f"telemetry.{site}.>",
            # An ephemeral ordered consumer (nats.py creates it unnamed, and again after
            # a gap; the server removes it when idle): the stream's flow-control
            # requests are answered on $JS.FC.
            *_js(f"CONSUMER.CREATE.{MQTT_RETAINED_STREAM}"),
            f"$JS.FC.{MQTT_RETAINED_STREAM}.>",
        ),
        subscribe=(
            f"twin.{site}.clock",
            f"twin.{site}.gateway.stats",
            BMS_SUBJECTS,
            f"_INBOX.{GATEWAY}.>",
        ),
        allow_responses=True,
    )
    table["bms"] = Permissions(publish=(BMS_SUBJECTS,), subscribe=())
    table["telemetry"] = Permissions(publish=(f"telemetry.{site}.>",), subscribe=())
    table["observer"] = Permissions(
        publish=(f"twin.{site}.gateway.stats",),  # a request (`twin gateway stats`)
        subscribe=(
            f"twin.{site}.*.state",
            f"twin.{site}.clock",
            f"twin.{site}.events",
            "_INBOX.observer.>",
        ),
    )
    return table


def password_variable(identity: str) -> str:
    """The environment variable nats-server reads an identity's password from."""
    return f"TWIN_NATS_PASSWORD_{identity.upper()}"


def _rule(subjects: Sequence[str]) -> str:
    # An empty allow list would allow everything: deny it all instead.
    quoted = ", ".join(f'"{s}"' for s in subjects)
    return f"{{ allow: [{quoted}] }}" if subjects else '{ deny: [">"] }'


def _permissions_conf(p: Permissions) -> str:
    responses = ", allow_responses: true" if p.allow_responses else ""
    return f"{{ publish: {_rule(p.publish)}, subscribe: {_rule(p.subscribe)}{responses} }}"


def render_authorization(
    site: str, identities: Sequence[str] = IDENTITIES, nkeys: Mapping[str, str] | None = None
) -> str:
    """The ``authorization`` block of a nats-server config: user/password per identity,
    the password from ``$TWIN_NATS_PASSWORD_<IDENTITY>`` in nats-server's environment; or,
    with ``nkeys`` (identity -> public key U...), one nkey user per identity given."""
    table = permissions(site)
    lines = ["authorization {", "  users = ["]
    for identity in identities:
        perms = _permissions_conf(table[identity])
        if nkeys is None:
            who = f'user: "{identity}", password: ${password_variable(identity)}'
        elif identity in nkeys:
            who = f"nkey: {nkeys[identity]}"
        else:
            continue
        lines.append(f"    {{ {who}, permissions: {perms} }}")
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def chart_yaml() -> str:
    """The chart's copy of the table (``<site>`` in place of the site id)."""
    table = {
        name: {
            "publish": list(p.publish),
            "subscribe": list(p.subscribe),
            "allow_responses": p.allow_responses,
        }
        for name, p in permissions().items()
    }
    header = (
        "# Generated by `python -m services.bus_permissions --chart` from the table in\n"
        "# services/bus_permissions.py: edit that, not this file.\n"
    )
    return header + yaml.safe_dump(table, sort_keys=False, width=100)


def markdown_table() -> str:
    """The table of the chart's README: identity, what it may publish, subscribe to."""

    def cell(subjects: Sequence[str]) -> str:
        return "<br>".join(f"`{s}`" for s in subjects) or "nothing"

    rows = ["| identity | publish | subscribe |", "| --- | --- | --- |"]
    for name, p in permissions().items():
        replies = "<br>replies to requests it receives" if p.allow_responses else ""
        rows.append(f"| `{name}` | {cell(p.publish)}{replies} | {cell(p.subscribe)} |")
    return "\n".join(rows) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.bus_permissions",
        description="Print the nats-server authorization block of a site (passwords from "
        "$TWIN_NATS_PASSWORD_<IDENTITY>), or write the Helm chart's copy of the table.",
    )
    parser.add_argument("--site", help="site id (the subject token)")
    parser.add_argument("--chart", action="store_true", help=f"write {CHART_FILE.name}")
    parser.add_argument("--markdown", action="store_true", help="print the table (README)")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(markdown_table())
        return 0
    if args.chart:
        CHART_FILE.write_text(chart_yaml())
        return 0
    if not args.site or not SITE_RE.match(args.site):
        print(f"error: --site: {args.site!r} is not a site id", file=sys.stderr)
        return 2
    sys.stdout.write(render_authorization(args.site))
    return 0


if __name__ == "__main__":
    sys.exit(main())
