"""The URLs of a started ``LocalTwin``. It types them as optional, since they are known
only once it has started (or was given them); a test holding a started twin needs them."""

from __future__ import annotations

from services.launcher import LocalTwin


def database_url(twin: LocalTwin) -> str:
    assert twin.database_url is not None, "the twin has no database"
    return twin.database_url


def nats_url(twin: LocalTwin) -> str:
    assert twin.nats_url is not None, "the twin has no NATS"
    return twin.nats_url
