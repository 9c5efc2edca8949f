"""The gRPC certificate the chart generates when grpc.tls is on without a Secret of the
user's (the default): a real TLS server of the runtime serves with it, clients verify the
Service names against its ca.crt, and (mutual) the same certificate is a client's."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from helm_binary import Helm
from test_security import SERVING, check, refused

from services.runtime.config import RuntimeConfig
from services.runtime.service import Service

CHART = Path(__file__).resolve().parents[1] / "charts" / "ai-factory-twin"
PREFIX = "twin-ai-factory-twin"
NAMESPACE = "factory"


def generated_tls(helm: Helm, tmp: Path, values: dict[str, Any]) -> dict[str, Path]:
    (tmp / "values.yaml").write_text(yaml.safe_dump(values))
    out = helm.run(
        "template", "twin", str(CHART), "-n", NAMESPACE, "-f", str(tmp / "values.yaml")
    ).stdout
    (secret,) = [
        d
        for d in yaml.safe_load_all(out)
        if d and d["kind"] == "Secret" and d["metadata"]["name"] == f"{PREFIX}-grpc-tls"
    ]
    assert secret["type"] == "kubernetes.io/tls"
    paths = {}
    for key in ("tls.crt", "tls.key", "ca.crt"):
        paths[key] = tmp / key
        paths[key].write_bytes(base64.b64decode(secret["data"][key]))
    return paths


@pytest.mark.parametrize("mutual", [False, True])
def test_generated_certificate_serves_the_service_names(
    helm: Helm, tmp_path: Path, mutual: bool
) -> None:
    tls = generated_tls(helm, tmp_path, {"grpc": {"tls": {"mutual": mutual}}})
    cert = x509.load_pem_x509_certificate(tls["tls.crt"].read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert f"{PREFIX}-historian.{NAMESPACE}.svc" in names.get_values_for_type(x509.DNSName)
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(usages)
    env = {
        "TWIN_GRPC_TLS_CERT_FILE": str(tls["tls.crt"]),
        "TWIN_GRPC_TLS_KEY_FILE": str(tls["tls.key"]),
        **({"TWIN_GRPC_TLS_CLIENT_CA_FILE": str(tls["ca.crt"])} if mutual else {}),
    }
    config = RuntimeConfig.from_env(env, shutdown_grace_s=0.2)
    client = {"TWIN_GRPC_TLS_CA_FILE": str(tls["ca.crt"])}
    if mutual:  # the test pod presents the same certificate (clientSecretName empty)
        client["TWIN_GRPC_TLS_CLIENT_CERT_FILE"] = str(tls["tls.crt"])
        client["TWIN_GRPC_TLS_CLIENT_KEY_FILE"] = str(tls["tls.key"])

    async def main() -> None:
        async with Service("tls", config=config, use_nats=False, handle_signals=False) as svc:
            address = f"127.0.0.1:{svc.port}"

            def checks() -> None:
                for name in (f"{PREFIX}-compute", f"{PREFIX}-twin.{NAMESPACE}.svc", "localhost"):
                    as_service = {**client, "TWIN_GRPC_TLS_SERVER_NAME": name}
                    assert check(address, as_service) == SERVING, name
                wrong = {**client, "TWIN_GRPC_TLS_SERVER_NAME": "elsewhere"}
                assert refused(address, wrong) == grpc.StatusCode.UNAVAILABLE
                assert refused(address, {}) == grpc.StatusCode.UNAVAILABLE  # plaintext

            await asyncio.to_thread(checks)

    asyncio.run(asyncio.wait_for(main(), 30))
