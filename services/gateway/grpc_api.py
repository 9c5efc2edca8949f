"""``twin.gateway.v1.GatewayService``: the gateway's counters over gRPC."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.gateway.quality import Reason
from twin.gateway.v1 import gateway_pb2, gateway_pb2_grpc

if TYPE_CHECKING:
    from services.gateway.service import Gateway


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def GetStats(self, request, context) -> gateway_pb2.GetStatsResponse:
        return stats_message(self.gateway)


def stats_message(gateway: Gateway) -> gateway_pb2.GetStatsResponse:
    """The counters as a message; the same numbers as the log line and the NATS reply."""
    stats = gateway.aligner.stats
    return gateway_pb2.GetStatsResponse(
        site_id=gateway.site,
        accepted=stats.accepted,
        rejected={r.value: stats.rejected.get(r.value, 0) for r in Reason},
        published=stats.published,
        held=stats.held,
        substituted=stats.substituted,
        ticks=stats.ticks,
        ahead=stats.ahead,
        batches=gateway.batches,
        restarts=gateway.restarts,
    )
