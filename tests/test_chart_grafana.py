"""The chart's Grafana objects (templates/grafana.yaml): the dashboards of
files/dashboards as ConfigMaps labelled for the Grafana sidecar with their folder
annotation, and the datasources ConfigMap (Prometheus, and the history database the chart
knows, with its password left to Grafana's environment)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from helm_binary import Helm
from test_chart import CASES, NAMESPACE, PREFIX, objects, render

from services.dashboards import FOLDER

pytestmark = pytest.mark.xdist_group("helm")
DASHBOARDS = sorted(p.stem for p in FOLDER.glob("*.json"))
DATASOURCES = f"{PREFIX}-grafana-datasources"


def dashboards(docs: list[dict]) -> dict[str, dict]:
    return {name: cm for name, cm in objects(docs, "ConfigMap").items() if "-dashboard-" in name}


def datasources(docs: list[dict]) -> dict[str, dict[str, Any]] | None:
    """The provisioned datasources by uid, or None when the ConfigMap is not rendered."""
    cm = objects(docs, "ConfigMap").get(DATASOURCES)
    if cm is None:
        return None
    (text,) = cm["data"].values()
    provisioning = yaml.safe_load(text)
    assert provisioning["apiVersion"] == 1
    return {d["uid"]: d for d in provisioning["datasources"]}


def test_dashboards_and_datasources_by_default(helm: Helm, tmp_path: Path) -> None:
    docs = render(helm, tmp_path, {})
    found = dashboards(docs)
    assert sorted(found) == [f"{PREFIX}-dashboard-{name}" for name in DASHBOARDS]
    assert len(found) == 4
    for name in DASHBOARDS:
        cm = found[f"{PREFIX}-dashboard-{name}"]
        assert cm["metadata"]["namespace"] == NAMESPACE
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["annotations"] == {"grafana_folder": "AI Factory Twin"}
        # The file as committed: Grafana's {{legend}} templates are not Helm's.
        assert cm["data"] == {f"{name}.json": (FOLDER / f"{name}.json").read_text().strip()}
    overview = json.loads(found[f"{PREFIX}-dashboard-site-overview"]["data"]["site-overview.json"])
    assert "{{writer}}" in json.dumps(overview)
    cm = objects(docs, "ConfigMap")[DATASOURCES]
    assert cm["metadata"]["labels"]["grafana_datasource"] == "1"
    ds = datasources(docs)
    assert ds is not None and sorted(ds) == ["twin-history", "twin-prometheus"]
    assert ds["twin-prometheus"]["type"] == "prometheus"
    assert ds["twin-prometheus"]["url"] == "http://prometheus-operated.monitoring.svc:9090"
    assert ds["twin-prometheus"]["jsonData"] == {"timeInterval": "30s"}
    history = ds["twin-history"]
    assert history["type"] == "grafana-postgresql-datasource"
    assert history["url"] == f"{PREFIX}-timescaledb.{NAMESPACE}.svc:5432"
    assert (history["user"], history["jsonData"]["database"]) == ("twin", "twin")
    assert history["jsonData"]["timescaledb"] is False
    assert history["secureJsonData"] == {"password": "${TWIN_HISTORY_PASSWORD}"}


def test_labels_folder_namespace_and_off(helm: Helm, tmp_path: Path) -> None:
    values = {
        "grafana": {
            "dashboards": {
                "label": "dashboards.example/load",
                "labelValue": "yes",
                "folderAnnotation": "k8s-sidecar-target-directory",
                "folder": "/tmp/dashboards/Twin",
                "namespace": "monitoring",
                "labels": {"release": "kps"},
            },
            "datasources": {
                "label": "ds",
                "labelValue": "on",
                "namespace": "monitoring",
                "prometheus": {"url": "http://kps-prometheus.monitoring:9090"},
                "history": {"user": "grafana_reader", "passwordEnv": "READER_PW"},
            },
        }
    }
    docs = render(helm, tmp_path, values)
    for cm in dashboards(docs).values():
        meta = cm["metadata"]
        assert meta["namespace"] == "monitoring"
        assert (meta["labels"]["dashboards.example/load"], meta["labels"]["release"]) == (
            "yes",
            "kps",
        )
        assert "grafana_dashboard" not in meta["labels"]
        assert meta["annotations"] == {"k8s-sidecar-target-directory": "/tmp/dashboards/Twin"}
    cm = objects(docs, "ConfigMap")[DATASOURCES]
    assert (cm["metadata"]["namespace"], cm["metadata"]["labels"]["ds"]) == ("monitoring", "on")
    ds = datasources(docs)
    assert ds is not None
    assert ds["twin-prometheus"]["url"] == "http://kps-prometheus.monitoring:9090"
    assert ds["twin-history"]["user"] == "grafana_reader"
    assert ds["twin-history"]["secureJsonData"] == {"password": "${READER_PW}"}
    off = {"grafana": {"dashboards": {"enabled": False}, "datasources": {"enabled": False}}}
    docs = render(helm, tmp_path, off)
    assert not dashboards(docs) and datasources(docs) is None


def test_external_database_url(helm: Helm, tmp_path: Path) -> None:
    docs = render(helm, tmp_path, CASES["external-url"])
    ds = datasources(docs)
    assert ds is not None
    history = ds["twin-history"]
    assert (history["url"], history["user"], history["jsonData"]["database"]) == (
        "db.example:5432",
        "twin",
        "twin",
    )
    assert "pw" not in json.dumps(objects(docs, "ConfigMap")[DATASOURCES]["data"])


def test_existing_secret_needs_the_history_address(helm: Helm, tmp_path: Path) -> None:
    """externalDatabase.existingSecret hides the URL: auto renders no datasources (the
    dashboards still), true fails naming what to set, and given values are used."""
    docs = render(helm, tmp_path, CASES["external"])
    assert datasources(docs) is None and len(dashboards(docs)) == 4
    forced = {**CASES["external"], "grafana": {"datasources": {"enabled": True}}}
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(forced))
    failed = helm.run(
        "template", "twin", str(FOLDER.parents[1]), "-f", str(tmp_path / "values.yaml"),
        check=False,
    )  # fmt: skip
    assert failed.returncode == 1
    assert (
        "grafana.datasources.history: host, database and user must be set "
        "(externalDatabase.existingSecret hides the database URL from the chart)"
    ) in failed.stderr
    given = {"host": "pg.db.svc:5432", "database": "history", "user": "reader"}
    values = {**CASES["external"], "grafana": {"datasources": {"history": given}}}
    ds = datasources(render(helm, tmp_path, values))
    assert ds is not None
    assert (ds["twin-history"]["url"], ds["twin-history"]["jsonData"]["database"]) == (
        "pg.db.svc:5432",
        "history",
    )


def test_bad_values_are_refused(helm: Helm, tmp_path: Path) -> None:
    for values, field in (
        ({"grafana": {"datasources": {"enabled": "yes"}}}, "enabled"),
        ({"grafana": {"datasources": {"history": {"passwordEnv": "A-B"}}}}, "passwordEnv"),
        ({"grafana": {"datasources": {"prometheus": {"url": "prometheus:9090"}}}}, "url"),
        ({"grafana": {"dashboards": {"namespace": "Bad_NS"}}}, "namespace"),
    ):
        (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
        failed = helm.run(
            "template", "twin", str(FOLDER.parents[1]), "-f", str(tmp_path / "values.yaml"),
            check=False,
        )  # fmt: skip
        assert failed.returncode == 1, values
        assert "values don't meet the specifications of the schema" in failed.stderr, failed.stderr
        assert field in failed.stderr, failed.stderr
