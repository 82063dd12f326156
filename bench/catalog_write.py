"""What one catalog write costs a meta member, by catalog size (issue 14).

Each member applies every committed command (`consensus.state.apply`) and computes the watched
changes of the new revision (`consensus.watch.catalog_changes`); both run on the Raft thread of
every member. This times the two, in process, for catalogs of 10 to 10,000 datasets over 1,000
tenants, per command kind: an update of one dataset, an in-sync change of one copy, a create
and a delete of a dataset, and a tenant's quota change. Prints microseconds per command (median
of `--repeats`).

    python -m bench.catalog_write [--repeats 200]
"""

from __future__ import annotations

import argparse
import statistics
import time

from consensus import commands as c
from consensus import state as meta_state
from consensus import watch

SIZES = (10, 1_000, 10_000)


def catalog(datasets: int, tenants: int = 1_000) -> meta_state.MetaState:
    state = meta_state.MetaState()
    for n in ("n1", "n2", "n3"):
        state, _ = meta_state.apply(state, c.RegisterNode(n, f"{n}:1", 1))
    for t in range(min(tenants, datasets)):
        state, _ = meta_state.apply(state, c.ProvisionTenant(f"t{t}", "", {}, "active", 1))
    for i in range(datasets):
        state, result = meta_state.apply(state, c.CreateDataset(
            f"u{i}", f"t{i % tenants}", f"d{i}", "", 4, "l2", "hnsw", {}, ("n1",), 2, 2,
            (("n1", "n2"),)))
        assert "error" not in result, result
    return state


def commands_for(i: int, datasets: int) -> dict[str, object]:
    return {
        "update dataset": c.UpdateDataset(f"t{(i % datasets) % 1_000}", f"d{i % datasets}",
                                          f"v{i}", None, 10 + i),
        "in-sync change": c.SetInSync(f"u{i % datasets}", 0, "n2", (i // datasets) % 2 == 1, 1,
                                    10 + i),
        "create dataset": c.CreateDataset(f"new{i}", "t0", f"new{i}", "", 4, "l2", "hnsw", {},
                                          ("n1",), 10 + i, 2, (("n1", "n2"),)),
        "tenant quotas": c.SetTenantQuotas("t0", {"max_vectors": 1_000 + i}, 10 + i),
    }


def measure(datasets: int, repeats: int) -> dict[str, tuple[float, float]]:
    state = catalog(datasets)
    timings: dict[str, tuple[list[float], list[float]]] = {}
    for i in range(repeats):
        for kind, command in commands_for(i, datasets).items():
            started = time.perf_counter()
            new, result = meta_state.apply(state, command)
            applied = time.perf_counter()
            changes = watch.catalog_changes(state, new)
            done = time.perf_counter()
            assert "error" not in result and changes, (kind, result)
            apply_s, changes_s = timings.setdefault(kind, ([], []))
            apply_s.append(applied - started)
            changes_s.append(done - applied)
            if kind == "create dataset":
                new, _ = meta_state.apply(new, c.DeleteDataset("t0", f"new{i}", 10 + i))
            state = new
    return {kind: (statistics.median(a) * 1e6, statistics.median(b) * 1e6)
            for kind, (a, b) in timings.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.catalog_write", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args(argv)
    print(f"{'datasets':>9} {'command':<16} {'apply us':>9} {'changes us':>11} {'total us':>9}")
    for size in SIZES:
        for kind, (apply_us, changes_us) in measure(size, args.repeats).items():
            print(f"{size:>9} {kind:<16} {apply_us:>9.1f} {changes_us:>11.1f} "
                  f"{apply_us + changes_us:>9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
