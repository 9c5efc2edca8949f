"""``twin serve console``: the console on its own (uvicorn), configured by ``TWIN_CONSOLE_*``
variables; SIGTERM stops it (uvicorn's own handling)."""

from __future__ import annotations

import sys

from services.runtime.config import ConfigError


def main() -> int:
    import uvicorn

    from services.console.app import create_app
    from services.console.config import ConsoleConfig

    try:
        config = ConsoleConfig.from_env()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            host=config.host,
            port=config.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=2,  # live streams never end by themselves
        )
    )
    server.run()
    return 0 if server.started else 1
