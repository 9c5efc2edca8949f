"""The console's gRPC clients of the twin: one aio channel per address, every call naming
the twin instance (when configured) as the CLI's calls do."""

from __future__ import annotations

from typing import Any

from services.console.config import ConsoleConfig
from services.runtime.channels import open_aio_channel
from services.runtime.interceptors import INSTANCE_KEY
from twin.history.v1 import history_pb2_grpc
from twin.twin.v1 import twin_pb2_grpc
from twin.whatif.v1 import whatif_pb2_grpc

CALL_TIMEOUT_S = 30.0


class Upstream:
    """Stubs of TwinService, WhatIfService and HistoryService; ``close()`` at the end."""

    def __init__(self, config: ConsoleConfig) -> None:
        self._twin = open_aio_channel(config.console_twin_address)
        if config.history_address == config.console_twin_address:
            self._history = self._twin
        else:
            self._history = open_aio_channel(config.history_address)
        self.twin: Any = twin_pb2_grpc.TwinServiceStub(self._twin)
        self.whatif: Any = whatif_pb2_grpc.WhatIfServiceStub(self._twin)
        self.history: Any = history_pb2_grpc.HistoryServiceStub(self._history)
        self.metadata = ((INSTANCE_KEY, config.instance_id),) if config.instance_id else ()

    async def close(self) -> None:
        await self._twin.close()
        if self._history is not self._twin:
            await self._history.close()
