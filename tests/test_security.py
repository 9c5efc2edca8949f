"""NATS and gRPC security options, against real servers: a nats-server with user/password,
nkey and mutual-TLS configurations; the runtime's gRPC server with TLS and mutual TLS;
the plaintext health port; the config errors; one domain service process end to end."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import os
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import grpc
import nkeys
import pytest
import typed_stubs
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2
from nats.aio.client import Client as NATS

from services.launcher import health
from services.runtime.bus import BusRefused
from services.runtime.channels import GrpcClientConfig, open_aio_channel, open_channel
from services.runtime.config import ConfigError, RuntimeConfig
from services.runtime.nats_server import NatsServer
from services.runtime.service import Service, connect_bus
from services.runtime.tls import grpc_server_credentials, nats_connect_options

ROOT = Path(__file__).resolve().parents[1]
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


def arun(coro: Coroutine[Any, Any, Any], timeout: float = 20.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


# ------------------------------------------------------------------ certificates, keys


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write(
    directory: Path, name: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
) -> None:
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (directory / f"{name}.key").write_bytes(key_pem)
    (directory / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )


def make_pki(directory: Path, prefix: str = "") -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate:
    ``{ca,server,client}_{crt,key}`` paths."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        _issue(f"{prefix}twin test CA", ca_key, None, ca_key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(directory, f"{prefix}ca", ca_key, ca)
    leaves = {
        "server": (
            ExtendedKeyUsageOID.SERVER_AUTH,
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        ),
        "client": (ExtendedKeyUsageOID.CLIENT_AUTH, [x509.DNSName("twin-client")]),
    }
    for name, (usage, names) in leaves.items():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            _issue(name, key, ca, ca_key)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        _write(directory, f"{prefix}{name}", key, cert)
    return {
        f"{name}_{ext}": directory / f"{prefix}{name}.{ext}"
        for name in ("ca", "server", "client")
        for ext in ("crt", "key")
    }


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("pki")
    paths = make_pki(directory)
    # A second, unrelated PKI: its client certificate must not pass the first CA.
    paths["rogue_client_crt"] = make_pki(directory, "rogue-")["client_crt"]
    paths["rogue_client_key"] = directory / "rogue-client.key"
    return paths


def user_nkey(directory: Path, name: str) -> tuple[str, Path]:
    """A user key pair: its public key (U...) and a seed file (SU...)."""
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    path = directory / f"{name}.nk"
    path.write_bytes(seed + b"\n")
    public = nkeys.from_seed(bytearray(seed)).public_key
    assert isinstance(public, bytes)  # the encoded key (nkeys annotates a nacl VerifyKey)
    return public.decode(), path


# ------------------------------------------------------------------------------- NATS


def nats_with(directory: Path, conf: str) -> NatsServer:
    """A real nats-server with ``conf`` (flags for port and JetStream come from NatsServer)."""
    path = directory / "nats.conf"
    path.write_text(conf)
    return NatsServer(extra_args=["-c", str(path)])


def tls_block(pki: dict[str, Path]) -> str:
    return (
        f'tls {{ cert_file: "{pki["server_crt"]}", key_file: "{pki["server_key"]}", '
        f'ca_file: "{pki["ca_crt"]}", verify: true }}\n'
    )


async def _noop() -> None:
    return None


async def bus_round_trip(url: str, env: dict[str, str]) -> None:
    """Connect as a service would (the config from ``env``), publish, receive."""
    config = RuntimeConfig.from_env({"TWIN_NATS_URL": url, **env})
    nc: NATS = await connect_bus(
        config,
        name="test",
        on_disconnect=_noop,
        on_reconnect=_noop,
        reconnect_wait_s=0.05,
        connect_deadline_s=5,
    )
    try:
        sub = await nc.subscribe("twin.sec.events")
        await nc.publish("twin.sec.events", b"hello")
        assert (await sub.next_msg(timeout=2)).data == b"hello"
    finally:
        await nc.close()


def assert_refused(url: str, env: dict[str, str], reason: str) -> None:
    start = time.monotonic()
    with pytest.raises(BusRefused, match=f"NATS at {url} refused the connection: .*{reason}"):
        arun(bus_round_trip(url, env))
    assert time.monotonic() - start < 4  # a refusal fails at once, not at the deadline


def test_nats_user_password(tmp_path: Path) -> None:
    conf = 'authorization { user: alice, password: "s3cret" }\n'
    with nats_with(tmp_path, conf) as server:
        arun(
            bus_round_trip(server.url, {"TWIN_NATS_USER": "alice", "TWIN_NATS_PASSWORD": "s3cret"})
        )
        wrong = {"TWIN_NATS_USER": "alice", "TWIN_NATS_PASSWORD": "guess"}
        assert_refused(server.url, wrong, "Authorization Violation")
        assert_refused(server.url, {}, "Authorization Violation")


def test_nats_nkey(tmp_path: Path) -> None:
    public, seed = user_nkey(tmp_path, "svc")
    _, other_seed = user_nkey(tmp_path, "other")
    conf = f"authorization {{ users = [ {{ nkey: {public} }} ] }}\n"
    with nats_with(tmp_path, conf) as server:
        arun(bus_round_trip(server.url, {"TWIN_NATS_NKEY_SEED_FILE": str(seed)}))
        assert_refused(
            server.url, {"TWIN_NATS_NKEY_SEED_FILE": str(other_seed)}, "Authorization Violation"
        )
        assert_refused(server.url, {}, "Authorization Violation")


def test_nats_mutual_tls(tmp_path: Path, pki: dict[str, Path]) -> None:
    ca = {"TWIN_NATS_TLS_CA_FILE": str(pki["ca_crt"])}
    client = {
        "TWIN_NATS_TLS_CERT_FILE": str(pki["client_crt"]),
        "TWIN_NATS_TLS_KEY_FILE": str(pki["client_key"]),
    }
    rogue = {
        "TWIN_NATS_TLS_CERT_FILE": str(pki["rogue_client_crt"]),
        "TWIN_NATS_TLS_KEY_FILE": str(pki["rogue_client_key"]),
    }
    with nats_with(tmp_path, tls_block(pki)) as server:
        arun(bus_round_trip(server.url, {**ca, **client}))
        assert_refused(server.url, ca, "CERTIFICATE_REQUIRED")  # no client certificate
        assert_refused(server.url, {**ca, **rogue}, "SSL")  # one the server's CA did not sign
        assert_refused(server.url, {}, "CERTIFICATE_VERIFY_FAILED")  # our CA is not trusted


# ------------------------------------------------------------------------------- gRPC


def check(address: str, env: dict[str, str], service: str = "") -> int:
    """Health.Check over a channel from ``open_channel`` (sync, as the CLI does)."""
    with open_channel(address, env) as channel:
        stub = typed_stubs.health(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=3).status


def refused(address: str, env: dict[str, str]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        check(address, env)
    return info.value.code()


def grpc_config(pki: dict[str, Path], *, mutual: bool) -> RuntimeConfig:
    env = {
        "TWIN_GRPC_TLS_CERT_FILE": str(pki["server_crt"]),
        "TWIN_GRPC_TLS_KEY_FILE": str(pki["server_key"]),
        "TWIN_HEALTH_ADDRESS": "127.0.0.1:0",
    }
    if mutual:
        env["TWIN_GRPC_TLS_CLIENT_CA_FILE"] = str(pki["ca_crt"])
    return RuntimeConfig.from_env(env, shutdown_grace_s=0.2)


def test_grpc_tls_and_plaintext_health_port(pki: dict[str, Path]) -> None:
    ca = {"TWIN_GRPC_TLS_CA_FILE": str(pki["ca_crt"])}

    async def main() -> None:
        config = grpc_config(pki, mutual=False)
        async with Service("sec", config=config, use_nats=False, handle_signals=False) as svc:
            main_port = f"127.0.0.1:{svc.port}"
            probe_port = f"127.0.0.1:{svc.grpc.health_port}"

            def checks() -> None:
                assert check(main_port, ca) == SERVING
                # The name to verify can differ from the target's host (both in the SAN).
                assert check(main_port, {**ca, "TWIN_GRPC_TLS_SERVER_NAME": "localhost"}) == SERVING
                mismatch = {**ca, "TWIN_GRPC_TLS_SERVER_NAME": "elsewhere"}
                assert refused(main_port, mismatch) == grpc.StatusCode.UNAVAILABLE
                assert refused(main_port, {}) == grpc.StatusCode.UNAVAILABLE  # plaintext
                assert check(probe_port, {}) == SERVING  # the probe port is plaintext
                assert refused(probe_port, ca) == grpc.StatusCode.UNAVAILABLE  # and only that

            await asyncio.to_thread(checks)
            async with open_aio_channel(main_port, ca) as channel:
                reply = await typed_stubs.aio_health(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=3
                )
                assert reply.status == SERVING
            # Same health status on both ports; nothing but health on the probe port.
            await svc.grpc.set_serving(False)
            assert await asyncio.to_thread(check, probe_port, {}) == NOT_SERVING
            assert await asyncio.to_thread(check, main_port, ca) == NOT_SERVING

            def reflection_only_on_main() -> None:
                with open_channel(probe_port, {}) as channel:
                    call = channel.stream_stream(REFLECTION)
                    with pytest.raises(grpc.RpcError) as info:
                        next(iter(call(iter([b""]), timeout=3)))
                    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED

            await asyncio.to_thread(reflection_only_on_main)

    arun(main())


def test_grpc_mutual_tls(pki: dict[str, Path]) -> None:
    ca = {"TWIN_GRPC_TLS_CA_FILE": str(pki["ca_crt"])}
    client = {
        "TWIN_GRPC_TLS_CLIENT_CERT_FILE": str(pki["client_crt"]),
        "TWIN_GRPC_TLS_CLIENT_KEY_FILE": str(pki["client_key"]),
    }
    rogue = {
        "TWIN_GRPC_TLS_CLIENT_CERT_FILE": str(pki["rogue_client_crt"]),
        "TWIN_GRPC_TLS_CLIENT_KEY_FILE": str(pki["rogue_client_key"]),
    }

    async def main() -> None:
        config = grpc_config(pki, mutual=True)
        async with Service("sec", config=config, use_nats=False, handle_signals=False) as svc:
            address = f"127.0.0.1:{svc.port}"

            def checks() -> None:
                assert check(address, {**ca, **client}) == SERVING
                assert refused(address, ca) == grpc.StatusCode.UNAVAILABLE  # no client cert
                assert refused(address, {**ca, **rogue}) == grpc.StatusCode.UNAVAILABLE
                assert refused(address, {}) == grpc.StatusCode.UNAVAILABLE  # plaintext
                assert check(f"127.0.0.1:{svc.grpc.health_port}", {}) == SERVING

            await asyncio.to_thread(checks)

    arun(main())


# ----------------------------------------------------------------------------- config


@pytest.fixture(scope="module")
def files(pki: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    directory = tmp_path_factory.mktemp("files")
    _, seed = user_nkey(directory, "cfg")
    text = directory / "notes.txt"
    text.write_text("not a certificate\n")
    return {
        "seed": str(seed),
        "text": str(text),
        "missing": str(directory / "missing.pem"),
        **{name: str(path) for name, path in pki.items()},
    }


SERVER_CONFIG_ERRORS = [
    ({"TWIN_NATS_USER": "a"}, "TWIN_NATS_PASSWORD: required when TWIN_NATS_USER is set"),
    ({"TWIN_NATS_PASSWORD": "p"}, "TWIN_NATS_USER: required when TWIN_NATS_PASSWORD is set"),
    (
        {"TWIN_NATS_USER": "a", "TWIN_NATS_PASSWORD": "p", "TWIN_NATS_NKEY_SEED_FILE": "{seed}"},
        "TWIN_NATS_NKEY_SEED_FILE: cannot be combined with TWIN_NATS_USER/TWIN_NATS_PASSWORD",
    ),
    (
        {"TWIN_NATS_NKEY_SEED_FILE": "{ca_crt}"},
        "TWIN_NATS_NKEY_SEED_FILE: '{ca_crt}' holds no user nkey seed (SU...)",
    ),
    (
        {"TWIN_NATS_NKEY_SEED_FILE": "{missing}"},
        "TWIN_NATS_NKEY_SEED_FILE: '{missing}' is not a readable file",
    ),
    (
        {"TWIN_NATS_TLS_CA_FILE": "{missing}"},
        "TWIN_NATS_TLS_CA_FILE: '{missing}' is not a readable file",
    ),
    ({"TWIN_NATS_TLS_CA_FILE": "{text}"}, "TWIN_NATS_TLS_CA_FILE: '{text}' holds no PEM data"),
    (
        {"TWIN_NATS_TLS_CERT_FILE": "{client_crt}"},
        "TWIN_NATS_TLS_KEY_FILE: required when TWIN_NATS_TLS_CERT_FILE is set",
    ),
    (
        {"TWIN_NATS_TLS_KEY_FILE": "{client_key}"},
        "TWIN_NATS_TLS_CERT_FILE: required when TWIN_NATS_TLS_KEY_FILE is set",
    ),
    (
        {"TWIN_GRPC_TLS_CERT_FILE": "{server_crt}"},
        "TWIN_GRPC_TLS_KEY_FILE: required when TWIN_GRPC_TLS_CERT_FILE is set",
    ),
    (
        {"TWIN_GRPC_TLS_KEY_FILE": "{server_key}"},
        "TWIN_GRPC_TLS_CERT_FILE: required when TWIN_GRPC_TLS_KEY_FILE is set",
    ),
    (
        {"TWIN_GRPC_TLS_CERT_FILE": "{missing}", "TWIN_GRPC_TLS_KEY_FILE": "{server_key}"},
        "TWIN_GRPC_TLS_CERT_FILE: '{missing}' is not a readable file",
    ),
    (
        {"TWIN_GRPC_TLS_CLIENT_CA_FILE": "{ca_crt}"},
        "TWIN_GRPC_TLS_CLIENT_CA_FILE: requires TWIN_GRPC_TLS_CERT_FILE and "
        "TWIN_GRPC_TLS_KEY_FILE (mutual TLS is TLS first)",
    ),
    (
        {"TWIN_HEALTH_ADDRESS": "probe"},
        "TWIN_HEALTH_ADDRESS: 'probe' is not host:port (e.g. 0.0.0.0:50051 or [::]:0)",
    ),
    (
        {"TWIN_GRPC_ADDRESS": "0.0.0.0:50051", "TWIN_HEALTH_ADDRESS": "0.0.0.0:50051"},
        "TWIN_HEALTH_ADDRESS: must differ from TWIN_GRPC_ADDRESS",
    ),
]


@pytest.mark.parametrize(("env", "message"), SERVER_CONFIG_ERRORS)
def test_server_config_errors(env: dict[str, str], message: str, files: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        RuntimeConfig.from_env({k: v.format(**files) for k, v in env.items()})
    assert str(info.value) == message.format(**files)


CLIENT_CONFIG_ERRORS = [
    (
        {"TWIN_GRPC_TLS_CLIENT_CERT_FILE": "{client_crt}"},
        "TWIN_GRPC_TLS_CLIENT_KEY_FILE: required when TWIN_GRPC_TLS_CLIENT_CERT_FILE is set",
    ),
    (
        {"TWIN_GRPC_TLS_CLIENT_KEY_FILE": "{client_key}"},
        "TWIN_GRPC_TLS_CLIENT_CERT_FILE: required when TWIN_GRPC_TLS_CLIENT_KEY_FILE is set",
    ),
    (
        {"TWIN_GRPC_TLS_CA_FILE": "{missing}"},
        "TWIN_GRPC_TLS_CA_FILE: '{missing}' is not a readable file",
    ),
    (
        {"TWIN_GRPC_TLS_SERVER_NAME": "localhost"},
        "TWIN_GRPC_TLS_SERVER_NAME: applies to TLS only: set TWIN_GRPC_TLS_CA_FILE",
    ),
]


@pytest.mark.parametrize(("env", "message"), CLIENT_CONFIG_ERRORS)
def test_client_config_errors(env: dict[str, str], message: str, files: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        open_channel("127.0.0.1:1", {k: v.format(**files) for k, v in env.items()})
    assert str(info.value) == message.format(**files)


def test_keys_that_do_not_match_their_certificates(files: dict[str, str]) -> None:
    grpc_env = {"TWIN_GRPC_TLS_CERT_FILE": files["server_crt"]}
    config = RuntimeConfig.from_env({**grpc_env, "TWIN_GRPC_TLS_KEY_FILE": files["client_key"]})
    with pytest.raises(ConfigError, match=r"^TWIN_GRPC_TLS_CERT_FILE: certificate and key do not"):
        grpc_server_credentials(config)
    nats_env = {"TWIN_NATS_TLS_CERT_FILE": files["client_crt"]}
    config = RuntimeConfig.from_env({**nats_env, "TWIN_NATS_TLS_KEY_FILE": files["server_key"]})
    with pytest.raises(ConfigError, match=r"^TWIN_NATS_TLS_CERT_FILE: certificate and key do not"):
        nats_connect_options(config)


def test_empty_variables_are_unset_and_secrets_stay_out_of_reprs() -> None:
    empty = {"TWIN_NATS_USER": "", "TWIN_NATS_PASSWORD": "", "TWIN_GRPC_TLS_CERT_FILE": ""}
    config = RuntimeConfig.from_env({**empty, "TWIN_HEALTH_ADDRESS": " "})
    assert (config.nats_user, config.grpc_tls_cert_file, config.health_address) == (None,) * 3
    assert nats_connect_options(config) == {}
    assert grpc_server_credentials(config) is None
    assert not GrpcClientConfig.from_env({"TWIN_GRPC_TLS_CA_FILE": ""}).tls
    config = RuntimeConfig.from_env({"TWIN_NATS_USER": "alice", "TWIN_NATS_PASSWORD": "s3cret"})
    assert "s3cret" not in repr(config)
    assert nats_connect_options(config) == {"user": "alice", "password": "s3cret"}


# ------------------------------------------------------------------------- end to end


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def secure_nats(tmp_path: Path, pki: dict[str, Path]) -> Iterator[NatsServer]:
    conf = 'authorization { user: svc, password: "pa55" }\n' + tls_block(pki)
    with nats_with(tmp_path, conf) as server:
        yield server


def nats_env(server: NatsServer, pki: dict[str, Path], password: str) -> dict[str, str]:
    return {
        "TWIN_NATS_URL": server.url,
        "TWIN_NATS_USER": "svc",
        "TWIN_NATS_PASSWORD": password,
        "TWIN_NATS_TLS_CA_FILE": str(pki["ca_crt"]),
        "TWIN_NATS_TLS_CERT_FILE": str(pki["client_crt"]),
        "TWIN_NATS_TLS_KEY_FILE": str(pki["client_key"]),
    }


def test_domain_service_over_tls_everywhere(
    secure_nats: NatsServer, pki: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``twin serve compute`` on a user/password + mutual-TLS bus, serving mutual TLS;
    probed as the CLI does (``twin status``) and as kubelet does (the plaintext port)."""
    address, probe = f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"
    env = {
        **os.environ,
        **nats_env(secure_nats, pki, "pa55"),
        "TWIN_SITE": "secure",
        "TWIN_GRPC_ADDRESS": address,
        "TWIN_HEALTH_ADDRESS": probe,
        "TWIN_GRPC_TLS_CERT_FILE": str(pki["server_crt"]),
        "TWIN_GRPC_TLS_KEY_FILE": str(pki["server_key"]),
        "TWIN_GRPC_TLS_CLIENT_CA_FILE": str(pki["ca_crt"]),
        "TWIN_SHUTDOWN_GRACE_S": "0.5",
        "PYTHONPATH": str(ROOT),
    }
    command = [sys.executable, "-m", "services.cli", "serve", "compute"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        monkeypatch.setenv("TWIN_GRPC_TLS_CA_FILE", str(pki["ca_crt"]))
        monkeypatch.setenv("TWIN_GRPC_TLS_CLIENT_CERT_FILE", str(pki["client_crt"]))
        monkeypatch.setenv("TWIN_GRPC_TLS_CLIENT_KEY_FILE", str(pki["client_key"]))
        deadline = time.monotonic() + 40
        while health(address) != "SERVING":
            assert process.poll() is None, process.communicate(timeout=5)[1]
            assert time.monotonic() < deadline, "compute not serving over TLS in time"
            time.sleep(0.2)
        assert check(probe, {}) == SERVING
        assert refused(address, {}) == grpc.StatusCode.UNAVAILABLE  # plaintext
        assert refused(address, {"TWIN_GRPC_TLS_CA_FILE": str(pki["ca_crt"])}) == (
            grpc.StatusCode.UNAVAILABLE  # TLS without the client certificate
        )
        process.terminate()
        _, stderr = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=5)
    assert process.returncode == 0, stderr
    assert "NATS connected" in stderr and "tls=True" in stderr


def test_service_with_wrong_password_exits_at_once(
    secure_nats: NatsServer, pki: dict[str, Path]
) -> None:
    script = "import sys\nfrom services.runtime import run\nsys.exit(run('demo'))\n"
    env = {**os.environ, **nats_env(secure_nats, pki, "guess"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 1
    assert "refused the connection" in done.stderr and "Authorization Violation" in done.stderr
