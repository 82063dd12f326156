"""The export of a backup (node/backup.py), run as a child process of the node:

    python -m node.backup_export STORE_URL VERSION DESTINATION DIMENSIONS METRIC INDEX_TYPE [TAG]

prints the number of rows copied; exits EXIT_NOT_FOUND when the store holds no such version
(no such tag, when TAG is given).
Kept apart from node/backup.py so that the child imports only what the copy needs (Deep Lake,
numpy and the shard engine), not the node's server stack.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from shard.replica import ShardReplica, mark_filled_columns
from tributary import errors, lazy_import, limits, procs

# node/backup.py imports this module for its exit codes: the node loads Deep Lake only when it
# opens a shard (tributary/lazy_import.py).
deeplake = lazy_import.module("deeplake")

EXIT_NOT_FOUND = 3


def _column_slice(column, start: int, end: int, kind: str):
    values = column[start:end]
    if kind == "dict":
        return [{} if v is None else dict(v) for v in values]
    if kind == "text":
        return ["" if v is None else v for v in values]
    return np.asarray(values)


def _kind(type_text: str) -> str:
    text = type_text.lower()
    if text.startswith("dict"):
        return "dict"
    if text.startswith("text"):
        return "text"
    return "array"


def _open_version(store_url: str, version: str, tag: str = ""):
    """The store's state at the cut: the commit `tag` names when a tag is given, else commit
    `version`. The tag is what identifies the cut's state. Commit ids count up within a store,
    so once a copy's store has been replaced by another copy's files (a snapshot install), the
    id it recorded at the cut names some other commit there (chaos: backup, seed 120, an export
    of 13 rows for a cut of 10). Tags are files of the store: they come along with the files,
    and each was put only on a state that held exactly the cut's ops."""
    source = deeplake.open_read_only(store_url)
    if tag:
        try:
            return source.tags[tag].open()
        except Exception as exc:  # noqa: BLE001 - deeplake raises TagNotFoundError
            raise errors.NotFound(f"this copy's store holds no tag {tag!r} (its files were "
                                  f"replaced since the cut by those of a copy the cut did not "
                                  f"mark?): {exc}") from None
    try:
        return source.history[version].open()
    except Exception as exc:  # noqa: BLE001 - deeplake raises its own types for a bad id
        raise errors.NotFound(f"this copy holds no Deep Lake version {version!r} (the "
                              f"backup's cut was taken on another copy?): {exc}") from None


def export_version(store_url: str, version: str, destination: str, dimensions: int,
                   metric: str, index_type: str, tag: str = "") -> int:
    """Writes the rows of `store_url` at the cut (`tag`, or commit `version` without one; see
    _open_version) into a new shard directory `destination` (store plus an empty graph).
    Returns the number of rows. Raises NotFound when the store holds no such version."""
    old = _open_version(store_url, version, tag)
    # A ShardReplica creates the store exactly as the engine expects it (schema, BM25 index,
    # metadata) and saves an empty graph on close.
    ShardReplica(destination, dimensions, metric, index_type).close()
    target = deeplake.open("file://" + os.path.join(destination, "store"))
    columns = {c.name: _kind(str(c.dtype)) for c in old.schema.columns}
    wanted = [c.name for c in target.schema.columns]
    rows = len(old)
    step = limits.backup_export_rows_max
    for start in range(0, rows, step):
        end = min(rows, start + step)
        batch = {}
        for name in wanted:
            if name in columns:
                batch[name] = _column_slice(old[name], start, end, columns[name])
            else:   # a column added after the version (deleted_at_ms): its default
                batch[name] = np.zeros(end - start, dtype=np.int64)
        mark_filled_columns(target, batch)
        target.append(batch)
    target.commit(f"restored rows of version {version}")
    return rows


def main(argv: list[str]) -> int:
    # Set here, after the exec, not in a preexec_fn of the forking node (see node/backup.py).
    procs.die_with_parent()
    os.nice(limits.backup_export_nice_max)
    store_url, version, destination, dimensions, metric, index_type, *tag = argv
    try:
        rows = export_version(store_url, version, destination, int(dimensions), metric,
                              index_type, tag[0] if tag else "")
    except errors.NotFound as exc:
        print(exc.message, file=sys.stderr)
        return EXIT_NOT_FOUND
    print(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
