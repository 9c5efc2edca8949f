"""The four dashboards of the chart: site overview, cooling plant, electrical chain and
energy sourcing, what-if studies. Live values are PromQL over the services' metrics
(services/runtime/metrics.py), history is SQL over the historian's tables (``_sql``)."""

from __future__ import annotations

from typing import Any

from services.dashboards import _sql
from services.dashboards._grafana import (
    Panel,
    Row,
    dashboard,
    graph,
    live,
    metric,
    prom,
    sql,
    stat,
    table,
)
from services.dashboards._sql import Col

RATE = "$__rate_interval"
WHATIF = 'grpc_service="twin.whatif.v1.WhatIfService"'


def _history(title: str, cols: list[Col], unit: str, **kw: Any) -> Panel:
    return graph(title, [sql(_sql.site_series(cols))], unit, **kw)


def overview() -> dict[str, Any]:
    state = f'{metric("twin_run_state")}{{site="$site",run="$run"}} == 1'
    return dashboard(
        "twin-site-overview",
        "AI Factory Twin / Site overview",
        "The site at a glance: power, PUE, the hottest GPU and the twin's own health (live,"
        " Prometheus), the run's history (TimescaleDB rollups), runs and deviation events.",
        [
            Row(
                "Now",
                [
                    stat("Facility power", live("twin_site_facility_watts"), "watt"),
                    stat("IT power", live("twin_site_it_watts"), "watt"),
                    stat("PUE", live("twin_site_pue_ratio"), "none"),
                    stat("Hottest GPU", live("twin_site_gpu_temp_max_celsius"), "celsius"),
                    stat("Throttled GPUs", live("twin_site_throttled_gpus"), "none"),
                    stat(
                        "Compute delivered",
                        live("twin_site_delivered_flop_per_second"),
                        "flops",
                    ),
                    stat(
                        "Energy cost",
                        live("twin_site_cost_usd_per_second", 3600),
                        "currencyUSD",
                        description="USD per hour at the current rate",
                    ),
                    stat(
                        "Run state",
                        state,
                        "none",
                        legend="{{state}}",  # the series of the state that is 1, by name
                        options={"textMode": "name", "graphMode": "none"},
                    ),
                    stat("Simulated time", live("twin_run_time_seconds"), "s"),
                    stat(
                        "Pace",
                        live("twin_run_real_time_factor"),
                        "x",
                        description="simulated seconds per wall-clock second",
                    ),
                    stat(
                        "Open deviations",
                        f'sum({metric("twin_deviations_open")}{{site="$site",run="$run"}})',
                        "none",
                    ),
                    stat(
                        "Interconnect headroom",
                        f"1 - {live('twin_site_facility_watts')}"
                        f" / {live('twin_site_interconnect_limit_watts')}",
                        "percentunit",
                    ),
                ],
            ),
            Row(
                "Live",
                [
                    graph(
                        "Power",
                        [
                            prom(live("twin_site_facility_watts"), "facility"),
                            prom(live("twin_site_it_watts"), "IT"),
                            prom(live("twin_site_cooling_watts"), "cooling"),
                            prom(live("twin_site_interconnect_limit_watts"), "interconnect limit"),
                        ],
                        "watt",
                    ),
                    graph(
                        "Hottest GPU",
                        [
                            prom(live("twin_site_gpu_temp_max_celsius"), "hottest GPU"),
                            prom(live("twin_site_gpu_throttle_start_celsius"), "throttle start"),
                            prom(live("twin_site_tcs_supply_max_celsius"), "hottest CDU supply"),
                        ],
                        "celsius",
                    ),
                ],
            ),
            Row(
                "The twin",
                [
                    graph(
                        "Ticks",
                        [
                            prom(
                                f'rate({metric("twin_clock_ticks_total")}{{site="$site"}}[{RATE}])',
                                "ticks/s",
                            )
                        ],
                        "ops",
                        w=8,
                    ),
                    graph(
                        "Tick latency (p50, p95)",
                        [
                            prom(
                                f"histogram_quantile({q}, sum by (le) (rate("
                                f"{metric('twin_clock_tick_duration_seconds_bucket')}"
                                f'{{site="$site"}}[{RATE}])))',
                                f"p{round(q * 100)}",
                            )
                            for q in (0.5, 0.95)
                        ],
                        "s",
                        w=8,
                    ),
                    graph(
                        "Historian",
                        [
                            prom(metric("twin_historian_lag_seconds"), "lag {{writer}}"),
                            prom(
                                f"rate({metric('twin_historian_rows_total')}[{RATE}])",
                                "rows/s {{writer}}",
                            ),
                        ],
                        "s",
                        w=8,
                    ),
                    graph(
                        "Services",
                        [
                            prom(
                                f'sum by (service) ({metric("twin_service_info")}{{site="$site"}})',
                                "{{service}}",
                            )
                        ],
                        "none",
                        w=12,
                    ),
                    graph(
                        "gRPC errors",
                        [
                            prom(
                                f"sum by (grpc_service, grpc_code) (rate("
                                f'{metric("grpc_server_handled_total")}{{grpc_code!="OK"}}[{RATE}]))',
                                "{{grpc_service}} {{grpc_code}}",
                            )
                        ],
                        "reqps",
                        w=12,
                    ),
                ],
            ),
            Row(
                "History of the run",
                [
                    _history(
                        "Power",
                        [
                            Col("facility_w", "facility"),
                            Col("it_w", "IT"),
                            Col("cooling_w", "cooling"),
                        ],
                        "watt",
                    ),
                    _history("PUE", [Col("pue", "PUE")], "none"),
                    _history(
                        "Hottest GPU",
                        [
                            Col("gpu_temp_max_c", "hottest GPU", "max"),
                            Col("tcs_supply_max_c", "hottest CDU supply", "max"),
                        ],
                        "celsius",
                    ),
                    _history(
                        "Compute delivered",
                        [Col("delivered_pflops", "delivered", scale=1e15)],
                        "flops",
                    ),
                    table("Runs of the site", _sql.RUNS, w=12),
                    table("Deviation events of the run", _sql.EVENTS, w=12),
                ],
            ),
        ],
    )


def cooling() -> dict[str, Any]:
    return dashboard(
        "twin-cooling-plant",
        "AI Factory Twin / Cooling plant",
        "Facility water and technology cooling loops, dry coolers and trim chillers: live"
        " values from Prometheus, the run's history per CDU from TimescaleDB.",
        [
            Row(
                "Now",
                [
                    stat("Facility supply", live("twin_site_facility_supply_celsius"), "celsius"),
                    stat(
                        "Supply setpoint",
                        live("twin_site_facility_supply_setpoint_celsius"),
                        "celsius",
                    ),
                    stat("Facility return", live("twin_site_facility_return_celsius"), "celsius"),
                    stat("Hottest CDU supply", live("twin_site_tcs_supply_max_celsius"), "celsius"),
                    stat("Chillers running", live("twin_site_chillers_running"), "none"),
                    stat("Fan speed", live("twin_site_fan_speed_ratio"), "percentunit"),
                    stat("Ambient", live("twin_site_ambient_celsius"), "celsius"),
                    stat("Cooling power", live("twin_site_cooling_watts"), "watt"),
                    stat("Heat rejected", live("twin_site_heat_rejected_watts"), "watt"),
                    stat(
                        "Water",
                        live("twin_site_water_cubic_meters_per_second", 3600),
                        "suffix: m³/h",
                    ),
                    stat(
                        "Water used in the run", live("twin_run_water_cubic_meters"), "suffix: m³"
                    ),
                    stat(
                        "Energy balance residual", live("twin_site_residual_cooling_watts"), "watt"
                    ),
                ],
            ),
            Row(
                "Live",
                [
                    graph(
                        "Temperatures",
                        [
                            prom(live("twin_site_facility_supply_celsius"), "facility supply"),
                            prom(live("twin_site_facility_return_celsius"), "facility return"),
                            prom(live("twin_site_facility_supply_setpoint_celsius"), "setpoint"),
                            prom(live("twin_site_tcs_supply_mean_celsius"), "CDU supply (mean)"),
                            prom(live("twin_site_tcs_supply_max_celsius"), "CDU supply (max)"),
                            prom(live("twin_site_ambient_celsius"), "ambient"),
                        ],
                        "celsius",
                    ),
                    graph(
                        "Cooling loads",
                        [
                            prom(live("twin_site_pumps_watts"), "pumps"),
                            prom(live("twin_site_dry_cooler_fans_watts"), "dry cooler fans"),
                            prom(live("twin_site_chillers_watts"), "chillers"),
                            prom(live("twin_site_air_handling_watts"), "air handling"),
                        ],
                        "watt",
                        options={"stacking": {"mode": "normal"}},
                    ),
                    graph(
                        "Heat",
                        [
                            prom(live("twin_site_heat_liquid_watts"), "to liquid"),
                            prom(live("twin_site_heat_air_watts"), "to air"),
                            prom(live("twin_site_heat_rejected_watts"), "rejected outdoors"),
                            prom(live("twin_site_chiller_load_watts"), "taken by chillers"),
                        ],
                        "watt",
                    ),
                    graph(
                        "Chillers and fans",
                        [
                            prom(live("twin_site_chillers_running"), "chillers running"),
                            prom(live("twin_site_fan_speed_ratio"), "fan speed"),
                        ],
                        "none",
                    ),
                ],
            ),
            Row(
                "History of the run",
                [
                    _history(
                        "Supply temperatures",
                        [
                            Col("facility_supply_c", "facility supply"),
                            Col("tcs_supply_mean_c", "CDU supply (mean)"),
                            Col("tcs_supply_max_c", "CDU supply (max)", "max"),
                            Col("ambient_c", "ambient"),
                        ],
                        "celsius",
                    ),
                    graph(
                        "CDU supply by CDU",
                        [sql(_sql.cdu_series("tcs_supply_c", "supply"))],
                        "celsius",
                    ),
                    graph(
                        "Heat to liquid by CDU",
                        [sql(_sql.cdu_series("heat_liquid_w", "heat"))],
                        "watt",
                    ),
                    _history("Cooling power", [Col("cooling_w", "cooling")], "watt"),
                ],
            ),
        ],
    )


def electrical() -> dict[str, Any]:
    return dashboard(
        "twin-electrical-energy",
        "AI Factory Twin / Electrical chain and energy sourcing",
        "From the grid meter, PPAs, batteries and on-site generation to the racks: live"
        " values from Prometheus, the run's history from TimescaleDB.",
        [
            Row(
                "Now",
                [
                    stat("Facility meter", live("twin_site_facility_watts"), "watt"),
                    stat("Interconnect limit", live("twin_site_interconnect_limit_watts"), "watt"),
                    stat("Site cap", live("twin_site_cap_ratio"), "percentunit"),
                    stat("Grid import", live("twin_site_grid_watts"), "watt"),
                    stat("Battery state of charge", live("twin_site_soc_ratio"), "percentunit"),
                    stat("Price", live("twin_site_price_usd_per_joule", 3.6e9), "suffix: USD/MWh"),
                    stat(
                        "Grid carbon",
                        live("twin_site_carbon_grams_per_joule", 3.6e6),
                        "suffix: g/kWh",
                    ),
                    stat("Cost so far", live("twin_run_cost_usd"), "currencyUSD"),
                    stat(
                        "CO2 so far (location)", live("twin_run_emissions_grams", 1e-6), "suffix: t"
                    ),
                    stat(
                        "CO2 so far (market)",
                        live("twin_run_market_emissions_grams", 1e-6),
                        "suffix: t",
                    ),
                    stat("Meter ramp", live("twin_site_ramp_watts_per_second"), "suffix: W/s"),
                    stat("Meter 0.1-2 Hz band", live("twin_site_meter_band_watts"), "watt"),
                ],
            ),
            Row(
                "Electrical chain (live)",
                [
                    graph(
                        "Where the meter's power goes",
                        [
                            prom(live("twin_site_it_watts"), "IT"),
                            prom(live("twin_site_cooling_watts"), "cooling"),
                            prom(live("twin_site_losses_watts"), "losses"),
                            prom(live("twin_site_misc_watts"), "misc"),
                        ],
                        "watt",
                        options={"stacking": {"mode": "normal"}},
                    ),
                    graph(
                        "Meter against its limits",
                        [
                            prom(live("twin_site_facility_watts"), "facility meter"),
                            prom(live("twin_site_supply_limit_watts"), "supply limit"),
                            prom(live("twin_site_interconnect_limit_watts"), "interconnect"),
                        ],
                        "watt",
                    ),
                    graph(
                        "Racks",
                        [
                            prom(live("twin_site_rack_ac_watts"), "rack AC"),
                            prom(live("twin_site_gpu_power_watts"), "GPUs"),
                        ],
                        "watt",
                    ),
                    graph(
                        "Ramps",
                        [
                            prom(live("twin_site_ramp_watts_per_second"), "meter"),
                            prom(live("twin_site_grid_ramp_watts_per_second"), "grid"),
                        ],
                        "suffix: W/s",
                    ),
                ],
            ),
            Row(
                "Energy sourcing (live)",
                [
                    graph(
                        "Sources",
                        [
                            prom(live("twin_site_grid_watts"), "grid"),
                            prom(live("twin_site_ppa_watts"), "PPA"),
                            prom(live("twin_site_battery_watts"), "battery"),
                            prom(live("twin_site_generation_watts"), "on-site generation"),
                        ],
                        "watt",
                    ),
                    graph(
                        "Cost and emissions rates",
                        [
                            prom(live("twin_site_cost_usd_per_second", 3600), "USD/h"),
                            prom(
                                live("twin_site_emissions_grams_per_second", 3.6e-3),
                                "t CO2/h (location)",
                            ),
                            prom(
                                live("twin_site_market_emissions_grams_per_second", 3.6e-3),
                                "t CO2/h (market)",
                            ),
                        ],
                        "short",
                    ),
                ],
            ),
            Row(
                "History of the run",
                [
                    _history(
                        "Meter and its parts",
                        [
                            Col("facility_w", "facility"),
                            Col("it_w", "IT"),
                            Col("cooling_w", "cooling"),
                            Col("losses_w", "losses"),
                            Col("misc_w", "misc"),
                        ],
                        "watt",
                    ),
                    _history(
                        "Sources",
                        [
                            Col("grid_w", "grid"),
                            Col("ppa_w", "PPA"),
                            Col("battery_w", "battery"),
                            Col("generation_w", "on-site generation"),
                        ],
                        "watt",
                    ),
                    _history("Battery state of charge", [Col("soc", "SoC")], "percentunit"),
                    _history(
                        "Cost rate", [Col("cost_usd_per_s", "USD/h", scale=3600)], "currencyUSD"
                    ),
                    _history(
                        "Emissions rate",
                        [Col("emissions_t_per_s", "t CO2/h", scale=3600)],
                        "suffix: t/h",
                    ),
                ],
            ),
        ],
    )


def whatif() -> dict[str, Any]:
    calls = f"{metric('grpc_server_handled_total')}{{{WHATIF}}}"
    latency = f"{metric('grpc_server_handling_seconds_bucket')}{{{WHATIF}}}"
    return dashboard(
        "twin-what-if",
        "AI Factory Twin / What-if studies",
        "Stored what-if studies (the twin's `studies` table): each variant's KPIs, its"
        " difference from the base and its constraint checks; the WhatIf API's calls live.",
        [
            Row(
                "Studies",
                [table("Studies of the site (created in the time range)", _sql.STUDIES)],
            ),
            Row(
                "The chosen study ($study)",
                [
                    table("Variants: KPIs", _sql.VARIANT_KPIS),
                    Panel(
                        "barchart",
                        "Energy cost by variant",
                        [sql(_sql.VARIANT_COST, table=True)],
                        w=12,
                        h=9,
                        unit="currencyUSD",
                        options={"xField": "variant", "orientation": "horizontal"},
                    ),
                    table("Variants: difference from the base", _sql.VARIANT_DELTAS, w=12, h=9),
                    table("Constraint checks", _sql.CONSTRAINTS),
                ],
            ),
            Row(
                "The WhatIf API (live)",
                [
                    graph(
                        "Calls by method and code",
                        [
                            prom(
                                f"sum by (grpc_method, grpc_code) (rate({calls}[{RATE}]))",
                                "{{grpc_method}} {{grpc_code}}",
                            )
                        ],
                        "reqps",
                    ),
                    graph(
                        "Latency (p95)",
                        [
                            prom(
                                f"histogram_quantile(0.95, sum by (le, grpc_method) (rate({latency}"
                                f"[{RATE}])))",
                                "{{grpc_method}}",
                            )
                        ],
                        "s",
                    ),
                ],
            ),
        ],
        study=True,
    )


DASHBOARDS = {
    "site-overview": overview,
    "cooling-plant": cooling,
    "electrical-energy": electrical,
    "what-if": whatif,
}
