"""The gateway freezes its long-lived tables out of the garbage collector's full
collections, and only while they grow (services/gateway/heap.py)."""

from __future__ import annotations

import gc

import pytest

from services.gateway.heap import FrozenHeap, relax


@pytest.fixture
def unfrozen():
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_freezes_while_the_tables_grow_and_not_after(unfrozen):
    heap = FrozenHeap(growth=0.05)
    table = [[i] for i in range(10_000)]  # lists: tracked by the collector
    assert heap.settle(len(table))
    frozen = gc.get_freeze_count()
    assert frozen >= len(table)
    assert not heap.settle(len(table))  # nothing new
    assert not heap.settle(10_500)  # +5 %: within the growth allowed
    table += [[i] for i in range(10_000)]
    assert heap.settle(len(table))  # doubled
    assert gc.get_freeze_count() >= frozen + 10_000
    assert (heap.frozen_size, heap.freezes) == (20_000, 2)


def test_a_full_collection_skips_what_is_frozen(unfrozen):
    table = [[i] for i in range(200_000)]
    FrozenHeap().settle(len(table))
    gc.collect()  # without the freeze, every one of them would now be in generation 2
    assert gc.get_freeze_count() >= len(table)
    assert len(gc.get_objects(generation=2)) < len(table) // 2


def _young_collections(objects: int) -> int:
    """Collections of the young generation while ``objects`` tracked objects are made
    and kept."""
    seen: list[int] = []

    def count(phase: str, info: dict) -> None:
        if phase == "start" and info["generation"] == 0:
            seen.append(1)

    gc.collect()  # the generations' counts start from zero
    gc.callbacks.append(count)
    try:
        kept = [[i] for i in range(objects)]
    finally:
        gc.callbacks.remove(count)
    assert len(kept) == objects
    return len(seen)


def test_relax_collects_less_often_and_gives_back_the_thresholds():
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)  # CPython's defaults
        assert _young_collections(15_000) >= 15_000 // 700 - 1
        assert relax(20_000, 10, 100) == (700, 10, 10)
        assert gc.get_threshold() == (20_000, 10, 100)
        assert _young_collections(15_000) == 0  # a few pages' worth: none
    finally:
        gc.set_threshold(*before)
