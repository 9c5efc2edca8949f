"""Site schema -> the arrays the model runs on.

``build_params`` lays racks out as (rack slot, CDU) with a mask, expands per-GPU arrays at
the finer granularity, fits equipment curves and slices the hourly drivers for the run.
Shapes depend only on the site's layout and the horizon, so variants of one site stack
for ``vmap``; ``pad_to`` pads smaller layouts to a common shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Float, Int

from twin_core.compute import ComputeParams
from twin_core.contract import Equipment
from twin_core.cooling import CoolingParams
from twin_core.curves import fit_loss_model, loss
from twin_core.drivers import DriverData, hourly_matrix
from twin_core.energy import ARBITRAGE, OFF, PEAK_SHAVE, SWING_FIRMING, EnergyParams
from twin_core.fluids import fluid_properties
from twin_core.long_step import MAX_DT_S, is_long
from twin_core.phases import job_phases
from twin_core.power import PowerParams
from twin_core.pytree import Array, pytree, static
from twin_core.site import MAX_PHASES, Chillers, RackType, Site, SiteError

Granularity = Literal["rack", "gpu"]
# "No limit" in params (caps, limits, schedules): finite so that gradients never meet
# inf * 0. Public as ``twin_core.NO_LIMIT``; compare with ``>= NO_LIMIT / 10``.
NO_LIMIT = 1e30
BIG = NO_LIMIT
MODES = {
    "off": OFF,
    "peak_shave": PEAK_SHAVE,
    "swing_firming": SWING_FIRMING,
    "arbitrage": ARBITRAGE,
}
# Coolant passes the four GPUs of a compute tray in series (estimate from the NVL72 tray
# layout: two Grace-Blackwell superchips per tray on one cold-plate loop).
GPUS_IN_SERIES = 4


@pytree
class Failures:
    """K failure slots (the schedule, padded)."""

    kind: Int[Array, " K"]  # an Equipment kind, -1 = padding
    index: Int[Array, " K"]  # unit of that kind
    start_s: Float[Array, " K"]
    end_s: Float[Array, " K"]


@pytree
class Params:
    compute: ComputeParams
    cooling: CoolingParams
    power: PowerParams
    energy: EnergyParams
    hourly: Float[Array, "H D"]  # H = hours + 1 from the start; D = drivers.COLUMNS + P
    failures: Failures
    installed: Float[Array, " E"]  # units of each kind, indexed by Equipment
    battery_soc0: Float[Array, ""]
    dt: float = static()
    steps_per_hour: int = static()


@dataclass(frozen=True)
class Layout:
    """Static dimensions; variants padded to one layout share a compiled rollout."""

    cdus: int
    racks: int  # slots per CDU
    gpus: int  # GPU elements per rack slot (1 at rack granularity)
    jobs: int
    pools: int
    failures: int

    def union(self, other: Layout) -> Layout:
        return Layout(*(max(a, b) for a, b in zip(self.astuple(), other.astuple(), strict=True)))

    def astuple(self) -> tuple[int, ...]:
        return (self.cdus, self.racks, self.gpus, self.jobs, self.pools, self.failures)


def layout_of(site: Site, granularity: Granularity) -> Layout:
    gpus = max(site.rack_types[h.rack_type].gpus for h in site.halls) if granularity == "gpu" else 1
    return Layout(
        cdus=site.cdu_count,
        racks=max(h.racks_per_cdu for h in site.halls),
        gpus=gpus,
        jobs=max(len(site.workload.training), 1),
        pools=len(site.workload.inference),
        failures=max(len(site.failures), 1),
    )


MIN_DT_S = 0.01  # the finest coupling interval: a year of it still counts in int32 steps


def steps_per_hour(dt: float) -> int:
    if not MIN_DT_S <= dt <= 3600:  # NaN too
        raise SiteError(f"dt: {dt:g} s is out of range ({MIN_DT_S:g} s to 1 h)")
    if dt > MAX_DT_S:
        raise SiteError(
            f"dt: {dt:g} s is longer than the model integrates accurately (at most {MAX_DT_S:g} s)"
        )
    sph = 3600.0 / dt
    if abs(sph - round(sph)) > 1e-9:
        raise SiteError(f"dt: {dt:g} s must divide an hour (e.g. 0.5, 1, 10, 60)")
    return round(sph)


def rack_dc_max_w(rt: RackType) -> float:
    return (
        rt.switch_trays * rt.switch_w + rt.other_w + rt.cpus * rt.cpu_max_w + rt.gpus * rt.gpu_tdp_w
    )


@dataclass(frozen=True)
class RackGrid:
    """The rack type in every (CDU, slot): distinct types, and an index into them per
    slot (-1: no rack)."""

    types: tuple[RackType, ...]
    index: np.ndarray  # (C, R) int


def _rack_types_grid(site: Site, lay: Layout) -> tuple[RackGrid, np.ndarray]:
    types: list[RackType] = []
    index = np.full((lay.cdus, lay.racks), -1, np.int64)
    row = 0
    for hall in site.halls:
        rt = site.rack_types[hall.rack_type]
        if rt not in types:
            types.append(rt)
        index[row : row + hall.cdus, : hall.racks_per_cdu] = types.index(rt)
        row += hall.cdus
    return RackGrid(tuple(types), index), (index >= 0).astype(float)


def _per_rack(grid: RackGrid, fn, default=0.0) -> np.ndarray:
    """``fn(rack type)`` for every slot (``default`` where there is no rack), evaluated
    once per distinct rack type."""
    values = np.array([fn(rt) for rt in grid.types] + [default], dtype=float)
    return values[grid.index]  # index -1 picks the default


def _workload_of_rack(site: Site, mask: np.ndarray, lay: Layout) -> np.ndarray:
    """Racks are assigned in site order: training jobs first, then inference pools."""
    idle = lay.jobs + lay.pools
    flat = np.full(mask.size, idle, dtype=np.int32)
    order = np.flatnonzero(mask.reshape(-1) > 0)
    cursor = 0
    groups = [(i, j.racks) for i, j in enumerate(site.workload.training)]
    groups += [(lay.jobs + i, p.racks) for i, p in enumerate(site.workload.inference)]
    for index, count in groups:
        flat[order[cursor : cursor + count]] = index
        cursor += count
    return flat.reshape(mask.shape)


def tcs_properties(site: Site) -> tuple[float, float]:
    """(density, specific heat) of the TCS coolant; CoolProp fluids at ``at_c``, else at
    the facility supply setpoint (the coolant runs a few K above it)."""
    c = site.cooling
    return fluid_properties(c.tcs_fluid, "cooling.tcs_fluid", c.supply_c)


def _compute_params(site: Site, lay: Layout, dt: float, dtype) -> ComputeParams:
    grid, mask = _rack_types_grid(site, lay)
    rho, cp = tcs_properties(site)
    speed = site.cooling.cdu.pump.speed
    smoothing_on = site.controls.smoothing_enabled

    def smooth(rt: RackType) -> bool:
        return smoothing_on and rt.smoothing.supported

    gpus = _per_rack(grid, lambda rt: rt.gpus)
    psu = np.stack(
        [
            _per_rack(
                grid,
                lambda rt, k=k: fit_loss_model(
                    rt.psu_efficiency.at_20,
                    rt.psu_efficiency.at_50,
                    rt.psu_efficiency.at_100,
                    rt.psu_rated_w,
                )[k],
            )
            for k in range(3)
        ],
        axis=-1,
    )
    dc_max = _per_rack(grid, rack_dc_max_w)
    rack_max_ac = (dc_max + loss(psu, dc_max)) * mask
    r_nom = _per_rack(grid, lambda rt: rt.thermal.r_die_c_per_w, 1.0)
    c_die = _per_rack(grid, lambda rt: rt.thermal.c_die_j_per_c, 1.0)
    gpu_index = np.arange(lay.gpus)
    if lay.gpus == 1:
        weight = gpus[..., None]
        r_die = r_nom[..., None]
        position = np.full((*mask.shape, 1), 0.5)
    else:
        weight = (gpu_index[None, None, :] < gpus[..., None]) * 1.0
        spread = _per_rack(grid, lambda rt: rt.thermal.spread_fraction)
        # Drawn over the site's own layout, then padded: a GPU's part-to-part spread must
        # not depend on the other variants of a study (the padded layout).
        own = layout_of(site, "gpu")
        z = np.zeros((*mask.shape, lay.gpus))
        z[: own.cdus, : own.racks, : own.gpus] = np.random.default_rng(0).standard_normal(
            (own.cdus, own.racks, own.gpus)
        )
        r_die = r_nom[..., None] * np.clip(1.0 + spread[..., None] * z, 0.5, 1.5)
        position = np.broadcast_to(
            ((gpu_index % GPUS_IN_SERIES) + 0.5) / GPUS_IN_SERIES, weight.shape
        )
    decay = np.exp(-dt / (r_die * c_die[..., None]))

    jobs = [
        job_phases(j, site.rack_types[kind])
        for j, kind in zip(site.workload.training, site.job_rack_types(), strict=True)
    ]
    schedule = site.workload.training

    def job_array(fn, default, of=jobs):
        values = [fn(j) for j in of] + [default] * (lay.jobs - len(of))
        return np.asarray(values, dtype)

    def phase_table(fn):  # (J * MAX_PHASES,): padded jobs have no phases
        rows = [fn(j) for j in jobs] + [np.zeros(MAX_PHASES)] * (lay.jobs - len(jobs))
        return np.asarray(np.concatenate(rows), dtype)

    # Built (CDU, slot) for readability, stored (slot, CDU): the long CDU axis innermost
    # vectorises well and per-CDU sums become row additions.
    f = lambda a: np.asarray(np.swapaxes(np.asarray(a), 0, 1), dtype)  # noqa: E731

    def g(a):
        """Like ``f``, but a property that is the same for every real rack is stored once
        (shape 1 on the rack axes) and broadcast: most sites have one or two rack types,
        and the step then streams a handful of per-rack arrays instead of twenty."""
        a = np.swapaxes(np.asarray(a, dtype=float), 0, 1)
        real = np.swapaxes(mask, 0, 1) > 0
        values = a[real]
        if values.size and np.all(values == values[:1]):
            return np.asarray(values[:1].reshape((1, 1, *a.shape[2:])), dtype)
        return np.asarray(a, dtype)

    return ComputeParams(
        mask=f(mask),
        gpus=f(gpus),
        gpu_idle_w=g(_per_rack(grid, lambda rt: rt.gpu_idle_w)),
        gpu_span_w=g(_per_rack(grid, lambda rt: rt.gpu_tdp_w - rt.gpu_idle_w)),
        fixed_dc_w=g(
            _per_rack(
                grid,
                lambda rt: rt.switch_trays * rt.switch_w + rt.other_w + rt.cpus * rt.cpu_idle_w,
            )
        ),
        cpu_span_w=g(_per_rack(grid, lambda rt: rt.cpus * (rt.cpu_max_w - rt.cpu_idle_w))),
        liquid_fraction=g(_per_rack(grid, lambda rt: rt.liquid_fraction)),
        peak_pflops=g(_per_rack(grid, lambda rt: rt.peak_pflops_per_gpu)),
        psu_loss=g(psu * mask[..., None]),
        rack_max_ac_w=f(rack_max_ac),
        coolant_c_w_per_k=g(
            _per_rack(
                grid,
                lambda rt: rt.coolant_flow_lpm / 60000.0 * speed * rho * cp,
                1.0,
            )
        ),
        r_die=g(r_die),
        die_decay=g(decay),
        die_tau_s=g(r_die * c_die[..., None]),
        coolant_position=g(position),
        throttle_start_c=g(_per_rack(grid, lambda rt: rt.thermal.throttle_start_c)),
        throttle_span_c=g(
            _per_rack(grid, lambda rt: rt.thermal.throttle_max_c - rt.thermal.throttle_start_c, 1.0)
        ),
        min_clock=g(_per_rack(grid, lambda rt: rt.thermal.min_clock_fraction, 1.0)),
        floor_w=g(
            _per_rack(
                grid,
                lambda rt: (
                    rt.smoothing.power_floor_fraction * rack_dc_max_w(rt) if smooth(rt) else 0.0
                ),
            )
        ),
        ramp_w=g(_per_rack(grid, lambda rt: rt.smoothing.ramp_w_per_s * dt if smooth(rt) else BIG)),
        storage_j=g(_per_rack(grid, lambda rt: rt.smoothing.storage_j if smooth(rt) else 0.0)),
        storage_power_w=g(_per_rack(grid, lambda rt: rt.smoothing.storage_power_w)),
        target_soc=g(_per_rack(grid, lambda rt: rt.smoothing.target_soc)),
        recentre_alpha=g(_per_rack(grid, lambda rt: -np.expm1(-dt / rt.smoothing.recentre_s), 1.0)),
        workload_of_rack=np.asarray(np.swapaxes(_workload_of_rack(site, mask, lay), 0, 1)),
        job_period_s=job_array(lambda j: j.period_s, 1.0),
        job_compute_s=job_array(lambda j: j.period_s * j.compute_fraction, 1.0),
        job_compute_util=job_array(lambda j: j.compute_util, 0.0),
        job_comm_util=job_array(lambda j: j.comm_util, 0.0),
        job_ckpt_every_s=job_array(lambda j: j.checkpoint_every_s, BIG, schedule),
        job_ckpt_s=job_array(lambda j: j.checkpoint_s, 0.0, schedule),
        job_ckpt_util=job_array(lambda j: j.checkpoint_util, 0.0, schedule),
        job_start_s=job_array(lambda j: j.start_s, 0.0, schedule),
        job_phase_high=phase_table(lambda j: j.high),
        job_phase_share=phase_table(lambda j: j.share),
        job_phase_weight=phase_table(lambda j: j.weight),
        gpu_weight=f(weight * mask[..., None]),
        operator_cap_w=np.full((1, 1), BIG, dtype),
        rack_count=np.ones((1, 1), dtype),
        cdu_count=np.ones((1,), dtype),
    )


def _cooling_params(site: Site, cp: ComputeParams, lay: Layout, dt: float, dtype) -> CoolingParams:
    c = site.cooling
    tcs_rho, tcs_cp = tcs_properties(site)
    fw_rho, fw_cp = fluid_properties(
        c.facility_water.fluid, "cooling.facility_water.fluid", c.supply_c
    )
    cdu_mask = np.zeros(lay.cdus)
    cdu_mask[: site.cdu_count] = 1.0
    rack_c = np.asarray(cp.coolant_c_w_per_k) * np.asarray(cp.mask)
    tcs_c = np.maximum(rack_c.sum(axis=0), 1.0)
    tcs_flow_m3s = tcs_c / (tcs_rho * tcs_cp)
    pump = c.cdu.pump
    tcs_pump_w = pump.rated_head_kpa * 1e3 * pump.speed**2 * tcs_flow_m3s / pump.efficiency
    fp = c.facility_water.pump
    flow_per_pump = fp.rated_flow_lps / 1000.0 * fp.speed
    turnover = c.facility_water.loop_volume_m3 / (flow_per_pump * c.facility_water.duty_pumps)
    if not is_long(dt) and turnover < 5 * dt:  # an explicit step (long_step.py)
        raise SiteError(
            f"cooling.facility_water.loop_volume_m3: loop turnover {turnover:.1f} s is too short "
            f"for dt = {dt:g} s (needs at least {5 * dt:g} s)"
        )
    dc = c.dry_coolers
    ch = c.chillers
    f = lambda a: np.asarray(a, dtype)  # noqa: E731
    return CoolingParams(
        cdu_mask=f(cdu_mask),
        cdu_ua=f(np.full(lay.cdus, c.cdu.ua_w_per_k)),
        tcs_c=f(tcs_c),
        tcs_heat_capacity=f(np.full(lay.cdus, c.cdu.loop_volume_m3 * tcs_rho * tcs_cp)),
        tcs_pump_w=f(tcs_pump_w * cdu_mask),
        cdu_count=f(np.ones(1)),
        fws_c_per_pump=f(flow_per_pump * fw_rho * fw_cp),
        fws_heat_capacity=f(c.facility_water.loop_volume_m3 * fw_rho * fw_cp),
        fws_pump_w=f(
            fp.rated_head_kpa * fp.rated_flow_lps / 1000.0 * fp.speed**3 / fp.efficiency * 1e3
        ),
        pumps=f(c.facility_water.pumps),
        duty_pumps=f(c.facility_water.duty_pumps),
        supply_c=f(c.supply_c),
        dc_units=f(dc.units),
        dc_ua=f(dc.ua_w_per_k_per_unit),
        dc_air_c=f(dc.air_flow_m3s_per_unit * 1.16 * 1006.0),
        dc_fan_w=f(dc.fan_power_kw_per_unit * 1e3),
        dc_min_speed=f(dc.min_speed),
        dc_ua_exponent=f(dc.ua_exponent),
        adiabatic=f(1.0 if dc.adiabatic.enabled else 0.0),
        adiabatic_threshold_c=f(dc.adiabatic.threshold_c),
        pad_effectiveness=f(dc.adiabatic.pad_effectiveness),
        ch_units=f(ch.units),
        ch_capacity_w=f(ch.capacity_kw * 1e3),
        ch_cop=f(ch.cop_ref),
        capft=f(ch.capft),
        eirft=f(ch.eirft),
        eirfplr=f(ch.eirfplr),
        ch_min_plr=f(ch.min_plr),
        curve_leaving_c=f(ch.curve_leaving_c),
        curve_condenser_c=f(ch.curve_condenser_c),
        curve_plr=f(ch.curve_plr),
        **{k: f(v) for k, v in _tower_params(ch).items()},
        air_handling_w_per_w=f(c.air_handling_w_per_w),
        fan_kp=f(site.controls.fan_kp),
        fan_ki=f(site.controls.fan_ki),
    )


def _tower_params(ch: Chillers) -> dict[str, float]:
    """The condenser water loop and cooling towers of water-cooled chillers; for
    air-cooled ones, harmless finite values behind ``water_cooled = 0``."""
    t = ch.cooling_tower
    if ch.condenser == "air" or t is None:
        return dict(
            water_cooled=0.0, ct_cells=0.0, ct_heat_w=1.0, ct_approach_k=1.0,
            ct_wet_bulb_c=20.0, ct_fan_w=0.0, ct_min_speed=0.2, ct_drift=0.0,
            ct_cycles=2.0, cw_flow_m3s=0.0, cw_pump_w=0.0,
        )  # fmt: skip
    pump = t.condenser_pump
    flow_m3s = pump.rated_flow_lps / 1000.0 * pump.speed
    return dict(
        water_cooled=1.0,
        ct_cells=float(t.cells),
        ct_heat_w=t.design_heat_kw_per_cell * 1e3,
        ct_approach_k=t.design_approach_k,
        ct_wet_bulb_c=t.design_wet_bulb_c,
        ct_fan_w=t.fan_power_kw_per_cell * 1e3,
        ct_min_speed=t.min_speed,
        ct_drift=t.drift_fraction,
        ct_cycles=t.cycles_of_concentration,
        cw_flow_m3s=flow_m3s,
        # affinity laws, as for the facility pumps: flow ~ speed, head ~ speed^2
        cw_pump_w=pump.rated_head_kpa * 1e3 * pump.speed**2 * flow_m3s / pump.efficiency,
    )


def _power_params(site: Site, cp: ComputeParams, dt: float, dtype) -> PowerParams:
    pw = site.power
    it_design = float(np.sum(np.asarray(cp.rack_max_ac_w)))
    ups = fit_loss_model(
        pw.ups.efficiency.at_20,
        pw.ups.efficiency.at_50,
        pw.ups.efficiency.at_100,
        pw.ups.rating_mw * 1e6,
    )
    rating = pw.transformers.rating_mva * 1e6
    rc_hp = 1.0 / (2 * math.pi * 0.1)
    rc_lp = 1.0 / (2 * math.pi * 2.0)
    cap = site.controls.it_power_cap_mw
    f = lambda a: np.asarray(a, dtype)  # noqa: E731
    return PowerParams(
        rack_max_ac_w=cp.rack_max_ac_w,
        rack_weight=f(np.ones((1, 1))),
        it_design_w=f(it_design),
        dist_loss_coeff=f(pw.distribution_loss_fraction / it_design),
        ups_loss=f(ups),
        xfmr_rating_va=f(rating),
        xfmr_no_load_w=f(pw.transformers.no_load_loss_fraction * rating),
        xfmr_load_loss_w=f(pw.transformers.load_loss_fraction * rating),
        power_factor=f(pw.power_factor),
        misc_fixed_w=f(pw.misc_fixed_mw * 1e6),
        misc_fraction=f(pw.misc_fraction_of_it),
        interconnect_w=f(pw.interconnect_limit_mw * 1e6),
        feeders=f(pw.feeders),
        it_cap_w=f(cap * 1e6 if cap is not None else BIG),
        cap_gain=f(pw.cap_gain),
        cap_min=f(pw.cap_min_fraction),
        hp_alpha=f(rc_hp / (rc_hp + dt)),
        lp_alpha=f(dt / (rc_lp + dt)),
    )


def _energy_params(site: Site, dtype) -> EnergyParams:
    e = site.energy
    b = e.battery
    f = lambda a: np.asarray(a, dtype)  # noqa: E731
    limit = e.grid.import_limit_mw
    return EnergyParams(
        battery_capacity_mwh=f(b.capacity_mwh),
        battery_power_mw=f(b.power_mw),
        battery_efficiency=f(math.sqrt(b.round_trip_efficiency)),
        # The mode as configured even at 0 MWh (a battery without capacity does nothing),
        # so that gradients with respect to the battery's size are not cut off at zero.
        battery_mode=np.asarray(MODES[b.mode], np.int32),
        peak_threshold_w=f(b.peak_threshold_mw * 1e6),
        grid_ramp_w_per_s=f(b.ramp_limit_mw_per_s * 1e6),
        charge_below=f(b.charge_below_usd_per_mwh),
        discharge_above=f(b.discharge_above_usd_per_mwh),
        import_limit_w=f(limit * 1e6 if limit is not None else BIG),
        gen_capacity_w=f(e.generation.capacity_mw * 1e6),
        gen_dispatchable=f(1.0 if e.generation.dispatch == "when_limited" else 0.0),
        gen_t_per_mwh=f(e.generation.emission_t_per_mwh),
        gen_usd_per_mwh=f(e.generation.cost_usd_per_mwh),
    )


def _failures(site: Site, lay: Layout, dtype) -> Failures:
    from twin_core.site import parse_duration_or_zero

    k = lay.failures
    kind = np.full(k, -1, np.int32)
    index = np.zeros(k, np.int32)
    start = np.full(k, BIG)
    end = np.full(k, BIG)
    for i, failure in enumerate(site.failures):
        kind[i] = Equipment.of(failure.equipment)
        index[i] = failure.index
        start[i] = parse_duration_or_zero(failure.at)
        if failure.repair_at is not None:
            end[i] = parse_duration_or_zero(failure.repair_at)
    return Failures(
        np.asarray(kind), np.asarray(index), np.asarray(start, dtype), np.asarray(end, dtype)
    )


def build_params(
    site: Site,
    drivers: DriverData,
    *,
    horizon_s: float,
    dt: float,
    granularity: Granularity = "rack",
    dtype=jnp.float32,
    pad_to: Layout | None = None,
    host: bool = False,
) -> Params:
    """All arrays for a run of ``horizon_s`` seconds at coupling interval ``dt``.

    Pure: ``drivers`` (``load_drivers(site)``) holds everything read from files.
    Built in NumPy and placed on the default device in one transfer; ``host=True`` keeps
    them in NumPy (batches merge, pad and stack many variants before one transfer)."""
    sph = steps_per_hour(dt)
    if granularity not in ("rack", "gpu"):
        raise SiteError(f"granularity: {granularity!r} is not one of rack, gpu")
    lay = layout_of(site, granularity)
    if pad_to is not None:
        lay = lay.union(pad_to)
    cp = _compute_params(site, lay, dt, dtype)
    hours = math.ceil(horizon_s / 3600.0) + 1
    hourly = hourly_matrix(site, drivers, hours)
    if lay.pools > len(site.workload.inference):
        pad = np.zeros((hourly.shape[0], lay.pools - len(site.workload.inference)))
        hourly = np.concatenate([hourly, pad], axis=1)
    units = site.installed_units()
    installed = [units[e.label] for e in Equipment]
    p = Params(
        compute=cp,
        cooling=_cooling_params(site, cp, lay, dt, dtype),
        power=_power_params(site, cp, dt, dtype),
        energy=_energy_params(site, dtype),
        hourly=np.asarray(hourly, dtype),
        failures=_failures(site, lay, dtype),
        installed=np.asarray(installed, dtype),
        battery_soc0=np.asarray(site.energy.battery.initial_soc, dtype),
        dt=float(dt),
        steps_per_hour=sph,
    )
    return p if host else jax.device_put(p)
