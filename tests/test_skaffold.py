"""skaffold.yaml and the Dockerfile it builds: every path, value key and sync rule points at
something that exists (skaffold itself is not run here: it needs a cluster)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SKAFFOLD = ROOT / "skaffold.yaml"
SCHEMA = ROOT / "charts" / "ai-factory-twin" / "values.schema.json"
MIN_API = "v4beta13"
STAGES = {"alpha": 0, "beta": 1, "": 2}


def api_key(version: str) -> tuple[int, int, int]:
    """skaffold/vNbetaM as a sortable key: (N, alpha < beta < stable, M)."""
    match = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    assert match, version
    return int(match[1]), STAGES[match[2] or ""], int(match[3] or 0)


def apply_patch(document: dict, patches: list[dict]) -> dict:
    """The JSON Patch subset skaffold profiles use here (add, replace); raises on a path
    that does not exist, as skaffold does."""
    result = copy.deepcopy(document)
    for patch in patches:
        *parents, last = [
            p.replace("~1", "/").replace("~0", "~") for p in patch["path"][1:].split("/")
        ]
        node: Any = result
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = patch["value"]
        else:
            if patch["op"] == "replace":
                assert last in node, patch["path"]
            node[last] = patch["value"]
    return result


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(SKAFFOLD.read_text())


@pytest.fixture(scope="module")
def variants(config: dict) -> dict[str, dict]:
    """The base config and each profile applied to it."""
    out = {"base": config}
    for profile in config.get("profiles", []):
        assert set(profile) <= {"name", "patches", "activation"}, profile["name"]
        out[profile["name"]] = apply_patch(config, profile.get("patches", []))
    return out


def test_api_version(config: dict) -> None:
    group, version = config["apiVersion"].split("/")
    assert group == "skaffold"
    assert api_key(version) >= api_key(MIN_API)
    assert config["kind"] == "Config"


def test_profiles(config: dict) -> None:
    assert {p["name"] for p in config["profiles"]} == {"dev", "gpu"}


def test_artifacts_exist(variants: dict[str, dict]) -> None:
    for name, variant in variants.items():
        for artifact in variant["build"]["artifacts"]:
            context = ROOT / artifact.get("context", ".")
            assert context.is_dir(), (name, context)
            dockerfile = context / artifact["docker"].get("dockerfile", "Dockerfile")
            assert dockerfile.is_file(), (name, dockerfile)
            args = artifact["docker"].get("buildArgs", {})
            for arg in args:
                assert re.search(rf"^ARG {arg}\b", dockerfile.read_text(), re.M), arg
    artifact = variants["gpu"]["build"]["artifacts"][0]
    assert artifact["docker"]["buildArgs"]["JAX_VARIANT"] == "cuda"


def schema_has(schema: dict, dotted: str) -> bool:
    node = schema
    for part in dotted.split("."):
        node = node.get("properties", {}).get(part)
        if node is None:
            return False
    return True


def test_chart_paths_and_value_keys(variants: dict[str, dict]) -> None:
    schema = json.loads(SCHEMA.read_text())
    images = {a["image"] for a in variants["base"]["build"]["artifacts"]}
    for name, variant in variants.items():
        for release in variant["deploy"]["helm"]["releases"]:
            assert (ROOT / release["chartPath"] / "Chart.yaml").is_file(), release["chartPath"]
            for field in ("setValueTemplates", "setValues"):
                for key, value in release.get(field, {}).items():
                    assert schema_has(schema, key), f"{name}: {field} {key} not in the schema"
                    # skaffold's values are strings (map[string]string)
                    assert isinstance(value, str), (name, key)
            for template in release.get("setValueTemplates", {}).values():
                for var in re.findall(r"\{\{\s*\.IMAGE_(?:REPO|TAG)_(\w+)\s*\}\}", template):
                    # The artifact name with '-' and '/' spelled '_'.
                    assert var in {re.sub(r"[-/]", "_", i) for i in images}, var
    base = variants["base"]["deploy"]["helm"]["releases"][0]["setValueTemplates"]
    assert base["image.repository"] == "{{.IMAGE_REPO_ai_factory_twin}}"
    assert base["image.tag"] == "{{.IMAGE_TAG_ai_factory_twin}}"
    gpu = variants["gpu"]["deploy"]["helm"]["releases"][0]
    assert gpu["setValues"]["whatif.gpu.enabled"] == "true"


def test_sync_rules_match_files(variants: dict[str, dict]) -> None:
    workdir = re.findall(r"^WORKDIR (\S+)", (ROOT / "Dockerfile").read_text(), re.M)[-1]
    artifact = variants["dev"]["build"]["artifacts"][0]
    rules = artifact["sync"]["manual"]
    assert {r["src"] for r in rules} == {"twin_core/**/*.py", "services/**/*.py"}
    for rule in rules:
        # Manual rules keep the path below the context: dest/<src path>, the source tree
        # the image runs from.
        assert rule["dest"] == workdir == "/app"
        matched = list((ROOT / artifact.get("context", ".")).glob(rule["src"]))
        assert matched, rule["src"]
    dev = variants["dev"]["deploy"]["helm"]["releases"][0]["setValues"]
    assert dev["dev.writableApp"] == "true"  # /app is writable only then


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert len(stages) == 2, stages
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", text, re.M)
    assert re.search(r"^ARG JAX_VARIANT=cpu$", text, re.M)
    assert "jax[cuda12]" in text
    final = text.split("\nFROM ")[-1]
    assert "COPY --from=builder /opt/venv /opt/venv" in final
    assert not re.search(r"apt-get|gcc|build-essential", final)
    assert re.search(r"^USER 10001:10001$", final, re.M)
    assert 'ENTRYPOINT ["twin", "serve"]' in final and 'CMD ["twin"]' in final
    for env in ("PYTHONDONTWRITEBYTECODE=1", "MPLCONFIGDIR=/tmp", "XDG_CACHE_HOME=/tmp"):
        assert env in final, env
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    ignored = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert {".venv", "node_modules", "out", ".git"} <= set(ignored)
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for path in source.split():
            assert (ROOT / path).exists(), path
            assert path not in ignored, path
