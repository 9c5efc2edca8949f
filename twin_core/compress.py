"""Exact compression of a site's identical racks and CDUs.

Racks with the same properties, the same workload and the same CDU conditions evolve
identically; so do CDUs that hold the same mix of racks. A 2,880-rack site with one rack
type and a few workloads holds a handful of distinct (rack, CDU) pairs, so the rollout
advances one representative of each, and every site total weights it by the racks and
CDUs it stands for (``rack_count``, ``cdu_count``, ``rack_weight``). Nothing is averaged
or approximated: each representative follows exactly the equations of the racks it
stands for; only the order of floating-point additions changes.

A CDU that a failure targets is kept apart (its class holds it alone), so failures keep
their meaning. Per-rack live values (telemetry, operator caps on one rack) need the full
layout: the domain services never compress.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from twin_core.compute import ComputeParams
from twin_core.contract import Equipment
from twin_core.params import Params
from twin_core.pytree import replace

# Per-CDU cooling leaves, shape (C,).
CDU_FIELDS = ("cdu_mask", "cdu_ua", "tcs_c", "tcs_heat_capacity", "tcs_pump_w", "cdu_count")
# Per-rack leaves zeroed in padding slots (so they contribute nothing to any total).
ZERO_IN_PADDING = ("mask", "gpus", "gpu_weight", "psu_loss", "rack_max_ac_w", "rack_count")


def _rack_fields(cp: ComputeParams, shape: tuple[int, int]) -> list[str]:
    """Compute leaves stored per rack (leading shape (R, C)), not once per site."""
    return [
        f.name
        for f in dataclasses.fields(ComputeParams)
        if np.shape(getattr(cp, f.name))[:2] == shape and f.name not in ("cdu_count", "rack_count")
    ]


def _idle_workload(p: Params) -> int:
    from twin_core.drivers import COLUMNS

    return int(np.shape(p.compute.job_period_s)[0] + np.shape(p.hourly)[1] - len(COLUMNS))


def _signatures(p: Params):
    """Per-rack leaves, rack signatures, the real-rack mask, per-CDU values and the CDU
    classes (signature -> member CDUs, in CDU order)."""
    cp, cl, pw = p.compute, p.cooling, p.power
    n_racks, n_cdus = np.shape(cp.mask)
    shape = (n_racks, n_cdus)
    rack_fields = _rack_fields(cp, shape)
    full = {name: np.asarray(getattr(cp, name)) for name in rack_fields}
    full["rack_max_ac_w"] = np.asarray(pw.rack_max_ac_w)
    full["rack_count"] = np.broadcast_to(np.asarray(cp.rack_count), shape)

    # A rack's signature: every per-rack value at its slot.
    columns = [a.reshape(n_racks, n_cdus, -1).astype(np.float64) for a in full.values()]
    table = np.concatenate(columns, axis=-1).reshape(n_racks * n_cdus, -1)
    _, rack_sig = np.unique(table, axis=0, return_inverse=True)
    rack_sig = rack_sig.reshape(shape)
    mask = np.asarray(cp.mask) > 0

    # A CDU's signature: its own values, the failures that target it, and its rack mix.
    f = p.failures
    cdu_failures = (np.asarray(f.kind) == Equipment.CDU)[:, None] & (
        np.asarray(f.index)[:, None] == np.arange(n_cdus)[None, :]
    )
    cdu_values = np.stack(
        [np.broadcast_to(np.asarray(getattr(cl, n), np.float64), (n_cdus,)) for n in CDU_FIELDS],
        axis=-1,
    )
    classes: dict[tuple, list[int]] = {}
    for c in np.flatnonzero(np.asarray(cl.cdu_mask) > 0):
        sigs, counts = np.unique(rack_sig[mask[:, c], c], return_counts=True)
        key = (
            tuple(cdu_values[c]),
            tuple(np.flatnonzero(cdu_failures[:, c])),
            tuple(sigs),
            tuple(counts),
        )
        classes.setdefault(key, []).append(int(c))
    return rack_fields, full, rack_sig, mask, cdu_values, classes


def cdu_classes(p: Params) -> list[list[int]]:
    """CDUs of an uncompressed layout that behave identically (same values, racks and
    failures), each class in CDU order: one of a class stands for any of them."""
    return list(_signatures(p)[-1].values())


def compress(p: Params) -> Params:
    """The same site with one representative per class of identical racks and CDUs."""
    cp, cl, pw = p.compute, p.cooling, p.power
    n_cdus = np.shape(cp.mask)[1]
    rack_fields, full, rack_sig, mask, cdu_values, classes = _signatures(p)
    rack_count = full["rack_count"]
    f = p.failures
    reps = [members[0] for members in classes.values()]
    counts_before = np.broadcast_to(np.asarray(cp.cdu_count, np.float64), (n_cdus,))
    cdu_count = np.array([counts_before[m].sum() for m in classes.values()], np.float64)

    # Within each representative CDU: one slot per distinct rack, counted.
    slots, counts = [], []
    for c in reps:
        real = np.flatnonzero(mask[:, c])
        _, first, count = np.unique(rack_sig[real, c], return_index=True, return_counts=True)
        order = np.argsort(first)
        slots.append(real[first[order]])
        counts.append(rack_count[real[first[order]], c] * count[order])
    new_r = max(len(s) for s in slots)
    pick = np.zeros((new_r, len(reps)), np.int64)
    new_count = np.zeros((new_r, len(reps)))
    padding = np.ones((new_r, len(reps)), bool)
    for j, (s, n) in enumerate(zip(slots, counts, strict=True)):
        pick[: len(s), j] = s
        pick[len(s) :, j] = s[0]
        new_count[: len(s), j] = n
        padding[: len(s), j] = False
    cols = np.broadcast_to(np.array(reps)[None, :], pick.shape)

    def gather(name: str, values: np.ndarray) -> np.ndarray:
        out = values[pick, cols]
        if name in ZERO_IN_PADDING:
            out = np.where(padding.reshape(padding.shape + (1,) * (out.ndim - 2)), 0, out)
        if name == "workload_of_rack":
            out = np.where(padding, _idle_workload(p), out)
        return out

    dtype = np.asarray(cp.mask).dtype
    compute = {name: gather(name, full[name]) for name in rack_fields}
    compute["rack_count"] = new_count
    compute["cdu_count"] = cdu_count
    new_cp = replace(
        cp,
        **{
            k: np.asarray(v, np.int32 if k == "workload_of_rack" else dtype)
            for k, v in compute.items()
        },
    )
    new_cl = replace(
        cl,
        **{n: np.asarray(cdu_values[reps, i], dtype) for i, n in enumerate(CDU_FIELDS)},
    )
    new_cl = replace(new_cl, cdu_count=np.asarray(cdu_count, dtype))
    new_pw = replace(
        pw,
        rack_max_ac_w=np.asarray(gather("rack_max_ac_w", full["rack_max_ac_w"]), dtype),
        rack_weight=np.asarray(new_count * cdu_count[None, :], dtype),
    )
    # Failures of a CDU now name its (singleton) class.
    kind, index = np.asarray(f.kind), np.asarray(f.index).copy()
    where = {c: j for j, c in enumerate(reps)}
    for k in np.flatnonzero(kind == Equipment.CDU):
        index[k] = where.get(int(index[k]), 0)
    failures = replace(f, index=np.asarray(index, np.int32))
    return replace(p, compute=new_cp, cooling=new_cl, power=new_pw, failures=failures)


def pad(p: Params, racks: int, cdus: int) -> Params:
    """Grow a compressed layout to ``racks`` x ``cdus`` with slots that stand for nothing
    (one batch holds variants of different shapes)."""
    cp, cl, pw = p.compute, p.cooling, p.power
    r, c = np.shape(cp.mask)
    if (r, c) == (racks, cdus):
        return p
    add_r, add_c = racks - r, cdus - c

    def grow(name: str, a, zero: bool) -> np.ndarray:
        a = np.asarray(a)
        widths = [(0, add_r), (0, add_c)] + [(0, 0)] * (a.ndim - 2)
        fill = 0 if zero else None
        if fill is None:  # repeat an existing edge value: keeps divisions finite
            return np.asarray(np.pad(a, widths, mode="edge"))
        out = np.pad(a, widths, mode="edge")
        out[r:, ...] = 0
        out[:, c:, ...] = 0
        return np.asarray(out)

    compute = {}
    for name in [*_rack_fields(cp, (r, c)), "rack_count"]:
        value = getattr(cp, name)
        if np.shape(value)[:2] != (r, c):
            continue  # stored once for the site
        grown = grow(name, value, name in ZERO_IN_PADDING)
        if name == "workload_of_rack":
            w = np.array(grown)
            w[r:, :] = _idle_workload(p)
            w[:, c:] = _idle_workload(p)
            grown = np.asarray(w)
        compute[name] = grown
    compute["cdu_count"] = np.asarray(np.pad(np.asarray(cp.cdu_count), (0, add_c)))
    cooling = {}
    for name in CDU_FIELDS:
        a = np.broadcast_to(np.asarray(getattr(cl, name)), (c,))
        zero = name in ("cdu_mask", "cdu_count", "tcs_pump_w")
        cooling[name] = np.asarray(np.pad(a, (0, add_c), mode="constant" if zero else "edge"))
    weight = np.asarray(compute["rack_count"]) * np.asarray(compute["cdu_count"])[None, :]
    power = {
        "rack_max_ac_w": grow("rack_max_ac_w", pw.rack_max_ac_w, True),
        "rack_weight": np.asarray(weight, np.asarray(pw.rack_weight).dtype),
    }
    return replace(
        p,
        compute=replace(cp, **compute),
        cooling=replace(cl, **cooling),
        power=replace(pw, **power),
    )
