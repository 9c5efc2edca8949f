"""The gateway freezes its long-lived tables out of the garbage collector's full
collections, and only while they grow (services/gateway/heap.py)."""

from __future__ import annotations

import gc

import pytest

from services.gateway.heap import FrozenHeap


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
