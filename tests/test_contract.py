"""The quantities contract (twin_core/contract.py): its tables are consistent, the SQL
migrations match it, and a quantity added to it reaches every layer with no other edit."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import get_args

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from services.domain_service import KIND_NAMES
from services.historian.migrate import migrate
from services.historian.schema import METRICS, SITE_COLUMNS, schema_problems
from twin.common.v1 import common_pb2
from twin_core import contract
from twin_core.coupling import Boundary
from twin_core.site import Failure

ROOT = Path(__file__).resolve().parents[1]


def test_every_name_is_unique_and_carries_its_unit() -> None:
    names = [q.name for q in contract.QUANTITIES]
    assert len(names) == len(set(names))
    unit_suffix = {"W": "_w", "C": "_c", "W/s": "_w_per_s", "USD/s": "_usd_per_s"}
    for q in contract.QUANTITIES:
        if q.unit in unit_suffix:
            assert q.name.endswith(unit_suffix[q.unit]), q.name
    assert [q.name for q in contract.HISTORY] == list(METRICS) == list(SITE_COLUMNS[3:])


def test_boundary_table_matches_the_model_and_the_domains() -> None:
    assert [f.name for f in dataclasses.fields(Boundary)] == [f.name for f in contract.BOUNDARY]
    # every published field has an owner and readers other than itself
    for f in contract.BOUNDARY:
        assert f.owner not in f.readers and f.readers, f.name
    assert contract.NEEDS == {
        "compute": ("cooling", "power"),
        "cooling": ("compute",),
        "power": ("compute", "cooling", "energy"),
        "energy": ("power",),
    }


def test_equipment_kinds_are_one_list() -> None:
    labels = get_args(Failure.model_fields["equipment"].annotation)
    assert labels == contract.EQUIPMENT_LABELS
    kinds = [v for v in common_pb2.EquipmentKind.values() if v]  # without UNSPECIFIED
    assert sorted(KIND_NAMES) == kinds
    assert [KIND_NAMES[k] for k in kinds] == list(contract.EQUIPMENT_LABELS)


def test_migrations_match_the_contract(postgres_url: str) -> None:
    migrate(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        assert schema_problems(conn) == []


# The script a new engineer's change is tried with, run in a copy of the code whose
# contract has one more stored quantity: it prints what each layer made of it.
PROBE = """
import json, sys
from conftest import small_site
from services.domain import DomainModel
from services.historian.migrate import MigrationError, migrate
from services.historian.queries import METRICS
from services.historian.writer import HistorianWriter, WriterConfig
from services.historian.schema import SITE_COLUMNS
from services.runtime.metrics import QUANTITY_METRICS
from services.messages import sources_of, state_message
from twin_core.rollout import simulate

site = small_site()
result = simulate(site, 4.0, 1.0, 1.0)
model = DomainModel(site, "power")
outputs, parts = model.advance({})
drivers = model.drivers(0)
message = state_message(
    "power", "run", 0, 1.0, sources_of(outputs, parts, drivers), model.quantities(outputs, drivers)
)
writer = HistorianWriter(None, WriterConfig(site="s", database_url=""))
row = writer.rows([{"power": message}])["site_series"][0]
db_a, db_b, migrations = sys.argv[1:4]
try:
    migrate(db_a)
    refused = None
except MigrationError as exc:
    refused = str(exc)
open(f"{migrations}/0099_it_scaled_w.sql", "w").write(
    "ALTER TABLE site_series ADD COLUMN IF NOT EXISTS it_scaled_w double precision;\\n"
)
migrate(db_a)  # the new version only
migrate(db_b)  # a fresh database, every version
print(json.dumps({
    "series": [float(result.means["it_scaled_w"][0]), float(result.means["it_w"][0])],
    "message": [message.quantities["it_scaled_w"], message.it_w],
    "row": row[SITE_COLUMNS.index("it_scaled_w")],
    "metric": "it_scaled_w" in METRICS,
    "prometheus": [m.metric.name for m in QUANTITY_METRICS if m.key == "it_scaled_w"],
    "refused": refused,
}))
"""
NEW_QUANTITY = (
    '    _q("it_scaled_w", "W", "power", lambda o, d, p: o.it_w * 1e-3, "IT / 1000", sql=F8),\n'
)


def _fresh_database(url: str, name: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return make_conninfo(url, dbname=name)


def test_a_quantity_added_to_the_contract_reaches_every_layer(
    tmp_path: Path,
    postgres_url: str,
) -> None:
    for part in ("twin_core", "services", "proto/gen/python", "scenarios", "tests"):
        shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__"))
    path = tmp_path / "twin_core" / "contract.py"
    source = path.read_text()
    anchor = "    # ---- weather\n"
    assert anchor in source
    path.write_text(source.replace(anchor, NEW_QUANTITY + anchor))  # the one edit
    (tmp_path / "probe.py").write_text(textwrap.dedent(PROBE))
    databases = [_fresh_database(postgres_url, f"contract_{x}") for x in "ab"]
    migrations = tmp_path / "services" / "historian" / "migrations"
    paths = [tmp_path, tmp_path / "proto" / "gen" / "python", tmp_path / "tests"]
    done = subprocess.run(
        [sys.executable, str(tmp_path / "probe.py"), *databases, str(migrations)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": ":".join(map(str, paths))},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    series_scaled, series_w = got["series"]
    assert series_scaled == pytest.approx(series_w * 1e-3, rel=1e-6)  # recorded by the rollout
    message_scaled, message_w = got["message"]
    assert message_scaled == pytest.approx(message_w * 1e-3, rel=1e-6)  # on the bus
    assert got["row"] == message_scaled  # in the historian's row
    assert got["metric"]  # a History API metric
    assert got["prometheus"] == ["twin_site_it_scaled_watts"]  # a gauge on /metrics
    assert got["refused"] == (  # and the migration check names what is missing
        "site_series.it_scaled_w: no column for the stored quantity 'it_scaled_w' of"
        " twin_core/contract.py (double precision); add a migration"
    )


def test_the_history_side_and_the_proto_mapping_load_no_jax() -> None:
    """What import-linter checks on the import graph, at run time: importing a submodule
    runs its package's ``__init__`` too, which the graph does not show."""
    code = (
        "import sys, services.historian.history_service, services.historian.writer,"
        " services.messages, twin_core.contract; print('jax' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert (done.returncode, done.stdout.strip()) == (0, "False"), done.stderr[-2000:]
