"""The point map's host table from a cluster's Nodes (the labels ``twin inventory
from-k8s`` reads): every node of a counted rack -> its rack's ``slot`` and ``cdu``.

Convention (the same order ``twin inventory`` writes halls in): CDUs are numbered
through the inventory's halls in order, a hall's rows (one CDU each) in order; a rack's
slot is its position within its row, racks sorted by their rack label value. So a site
file and a host table made from the same Nodes agree on ``rack/<slot>/<cdu>``.
"""

from __future__ import annotations

from services.inventory import Inventory


def hosts_from_inventory(inv: Inventory) -> dict[str, dict[str, int]]:
    hosts: dict[str, dict[str, int]] = {}
    cdu = 0
    for hall in inv.halls:
        for row in hall.rows:
            for slot, rack in enumerate(r for r in hall.racks if r.row == row):
                for node in rack.nodes:
                    hosts[node] = {"slot": slot, "cdu": cdu}
            cdu += 1
    return hosts


def hosts_yaml(hosts: dict[str, dict[str, int]], source: str) -> str:
    lines = [f"# host -> rack slot and CDU, from {source}", "hosts:"]
    lines += [f"  {name}: {{slot: {p['slot']}, cdu: {p['cdu']}}}" for name, p in hosts.items()]
    return "\n".join(lines) + "\n"
