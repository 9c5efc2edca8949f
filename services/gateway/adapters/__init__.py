"""Field protocol adapters. ``make_adapter`` builds the one a point map source names;
a new protocol is a module here and a line in ``_FACTORIES``."""

from __future__ import annotations

from collections.abc import Callable

from nats.aio.client import Client as NATS

from services.gateway.pointmap import BmsSource, DcgmSource, ModbusSource, RedfishSource
from services.gateway.reading import Adapter


def _bms(name: str, cfg: BmsSource, nc: NATS | None) -> Adapter:
    from services.gateway.adapters.bms import BmsMqttAdapter, BmsNatsAdapter

    if cfg.transport == "nats":
        if nc is None:
            raise ValueError(f"sources.{name}: transport nats needs the twin's bus")
        return BmsNatsAdapter(name, cfg, nc)
    return BmsMqttAdapter(name, cfg)


def _dcgm(name: str, cfg: DcgmSource, nc: NATS | None) -> Adapter:
    from services.gateway.adapters.dcgm import DcgmAdapter

    return DcgmAdapter(name, cfg)


def _modbus(name: str, cfg: ModbusSource, nc: NATS | None) -> Adapter:
    from services.gateway.adapters.modbus import ModbusAdapter

    return ModbusAdapter(name, cfg)


def _redfish(name: str, cfg: RedfishSource, nc: NATS | None) -> Adapter:
    from services.gateway.adapters.redfish import RedfishAdapter

    return RedfishAdapter(name, cfg)


_FACTORIES: dict[str, Callable[..., Adapter]] = {
    "bms": _bms, "dcgm": _dcgm, "modbus": _modbus, "redfish": _redfish,
}  # fmt: skip


def make_adapter(
    name: str,
    cfg: BmsSource | DcgmSource | ModbusSource | RedfishSource,
    nc: NATS | None = None,
) -> Adapter:
    return _FACTORIES[cfg.kind](name, cfg, nc)
