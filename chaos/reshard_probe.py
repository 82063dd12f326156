"""Shard splits under chaos (the `reshard` scenario): at `reshard_at_s` into the run, double
the shard count of each workload dataset while the workloads write and the faults run, follow
each split until it has switched to the new count, and after the run read every row back
through the public listing for the rows-placed checker.

Everything goes through the router's public admin REST API (router/reshard_admin.py), through
the client->router proxy, as an operator's `tributary admin datasets reshard` would:

    POST /api/v1/admin/datasets/{name}/reshard  {"shards": 2N}   start: 202 with the progress
    GET  /api/v1/admin/datasets/{name}/reshard                   progress: state building |
                                                                 done | none, shard_count, ...

The admin credential is `Authorization: Bearer $TRIBUTARY_API_KEY` when that is set (what every
`tributary admin` command sends); the harness's cluster otherwise runs with authentication off.

A start whose answer was lost (a reset, a timeout, a 5xx) may or may not have been proposed, so
before every start the probe reads the progress (`classify_progress`): a split already building
to 2N, or a count already switched, is followed and not started again. Every request has a
timeout, and the polling a deadline: a generous one at the start, moved by `settle` to the
scenario's bound after the final heal.

Each split is an op of the run's history (process "reshard", kind "reshard", key the dataset,
value the new count): invoked with the first start request, ok when a progress read first saw
the new count, unknown when none did.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from typing import Any, Callable

from chaos.history import HistoryRecorder
from chaos.probe import AdminProbe
from chaos.workload import (BATCH_DATASET, BATCH_SHARDS, KV_DATASET, KV_SHARDS, Reply,
                            classify)

PROCESS = "reshard"
KIND = "reshard"
POLL_S = 0.25
# Start requests are retried at most this often while faults refuse or lose them.
RETRY_S = 1.0

# What a progress read says about one split (`classify_progress`).
SWITCHED = "switched"           # the dataset has the new count: the split is done
BUILDING = "building"           # this split is in progress (children being built, or waiting)
NOT_STARTED = "not-started"     # the dataset has its old count and no split in progress
UNEXPECTED = "unexpected"       # anything else: another count, a split to another count


def splits_for(workloads: list[str]) -> list[tuple[str, int]]:
    """(dataset, its shard count at creation) of every workload dataset a run splits."""
    out = []
    if "kv" in workloads:
        out.append((KV_DATASET, KV_SHARDS))
    if "batch" in workloads:
        out.append((BATCH_DATASET, BATCH_SHARDS))
    return out


def classify_progress(doc: Any, old_count: int, new_count: int) -> str:
    """Where a split from `old_count` to `new_count` shards stands, by a progress document of
    GET .../reshard (router/reshard_admin.progress_doc: `state`, `shard_count`, and while
    building `new_count`). Pure."""
    if not isinstance(doc, dict) or not isinstance(doc.get("shard_count"), int):
        return UNEXPECTED
    count, state = doc["shard_count"], doc.get("state")
    if count == new_count:
        return SWITCHED
    if count != old_count:
        return UNEXPECTED
    if state == "building":
        return BUILDING if doc.get("new_count") == new_count else UNEXPECTED
    # "done" names an earlier split's switch (the count is still the old one), "none" no split.
    return NOT_STARTED if state in ("none", "done") else UNEXPECTED


def start_refused(reply: Reply) -> bool:
    """A start answer that no retry changes: not authorized, or no such dataset. Any other
    failure (a 5xx, a lost answer, 409 for a split or a move in flight, 400 when the count has
    already doubled) is settled by the next progress read."""
    return reply.status in (401, 403, 404)


class Split:
    """One dataset's split, as the probe follows it. Times are monotonic seconds."""

    def __init__(self, dataset: str, old_count: int):
        self.dataset = dataset
        self.old_count = old_count
        self.new_count = 2 * old_count
        self.requested_at: float | None = None     # the first start request
        self.building_seen_at: float | None = None  # first read showing it in progress
        self.switched_by: float | None = None       # first read showing the new count
        self.start_attempts = 0
        self.start_errors: list[str] = []
        self.progress_reads = 0
        self.progress_errors = 0
        self.last_progress: Any = None
        self.error: str | None = None               # a definite refusal: the probe gave up
        self.op: int | None = None                  # the history op's handle
        # After the run: the count the final reads ran at, and the rows the listing showed.
        self.count_at_final_reads: int | None = None
        self.listed: list[list[Any]] | None = None
        self.list_error: str | None = None

    @property
    def over(self) -> bool:
        return self.switched_by is not None or self.error is not None

    def to_dict(self, t0: float) -> dict:
        def rel(t: float | None) -> float | None:
            return None if t is None else round(t - t0, 3)
        seconds = (None if self.switched_by is None or self.requested_at is None
                   else round(self.switched_by - self.requested_at, 2))
        return {"dataset": self.dataset, "from_shards": self.old_count,
                "to_shards": self.new_count, "requested_at_s": rel(self.requested_at),
                "building_seen_at_s": rel(self.building_seen_at),
                "switched_by_s": rel(self.switched_by), "seconds": seconds,
                "start_attempts": self.start_attempts, "start_errors": self.start_errors[-5:],
                "progress_reads": self.progress_reads,
                "progress_errors": self.progress_errors,
                "last_progress": self.last_progress, "error": self.error,
                "count_at_final_reads": self.count_at_final_reads, "listed": self.listed,
                "list_error": self.list_error}


class ReshardProbe(AdminProbe):
    """The splits of one run: a thread from `start` until every split switched or the
    deadline passed; `settle` sets the deadline after the heal and waits for the thread."""

    thread_name = "reshard-probe"

    def __init__(self, rest_url: str, splits: list[tuple[str, int]], at_s: float,
                 recorder: HistoryRecorder, log: Callable[[str], None],
                 request_timeout_s: float = 5.0):
        super().__init__(rest_url, at_s, log, request_timeout_s)
        self.splits = [Split(dataset, count) for dataset, count in splits]
        self.recorder = recorder
        self._lock = threading.Lock()

    # ---- the thread -------------------------------------------------------------------------

    def _path(self, split: Split) -> str:
        return f"/admin/datasets/{urllib.parse.quote(split.dataset, safe='')}/reshard"

    def _run(self) -> None:
        self._wait_to_start()
        self.log(f"[{self._now():7.2f}s] reshard: splitting "
                 + ", ".join(f"{s.dataset} {s.old_count} -> {s.new_count}"
                             for s in self.splits))
        next_start = {s.dataset: 0.0 for s in self.splits}
        while time.monotonic() < self.deadline:
            for split in self.splits:
                if not split.over:
                    self._step(split, next_start)
            if all(s.over for s in self.splits):
                break
            time.sleep(POLL_S)
        with self._lock:
            for split in self.splits:
                if split.op is not None and split.switched_by is None:
                    self.recorder.unknown(split.op, split.error or "the split did not switch "
                                          "before the deadline")
                    split.op = None

    def _step(self, split: Split, next_start: dict[str, float]) -> None:
        reply = self.http.request("GET", self._path(split), headers=self.headers)
        split.progress_reads += 1
        if reply.status != 200:
            split.progress_errors += 1
            return
        split.last_progress = reply.doc
        where = classify_progress(reply.doc, split.old_count, split.new_count)
        now = time.monotonic()
        if where == SWITCHED:
            split.switched_by = now
            with self._lock:
                if split.op is None:     # switched before any start of ours: not ours
                    split.error = (f"{split.dataset} had {split.new_count} shards before the "
                                   "probe started its split")
                    return
                self.recorder.ok(split.op, {"seconds": round(now - split.requested_at, 2)})
                split.op = None
            self.log(f"[{self._now():7.2f}s] reshard: {split.dataset} switched to "
                     f"{split.new_count} shards {now - split.requested_at:.2f}s after the "
                     f"first start request")
        elif where == BUILDING:
            if split.building_seen_at is None:
                split.building_seen_at = now
                self.log(f"[{self._now():7.2f}s] reshard: {split.dataset} building "
                         f"({_progress_line(reply.doc)})")
        elif where == NOT_STARTED:
            if now >= next_start[split.dataset]:
                next_start[split.dataset] = now + RETRY_S
                self._start(split)
        else:
            split.error = f"unexpected progress for {split.dataset}: {reply.doc!r:.300}"

    def _start(self, split: Split) -> None:
        with self._lock:
            if split.op is None:
                split.requested_at = time.monotonic()
                split.op = self.recorder.invoke(PROCESS, KIND, split.dataset, split.new_count)
        split.start_attempts += 1
        reply = self.http.request("POST", self._path(split), {"shards": split.new_count},
                                  headers=self.headers)
        if 200 <= (reply.status or 0) < 300:
            self.log(f"[{self._now():7.2f}s] reshard: {split.dataset} split to "
                     f"{split.new_count} started (attempt {split.start_attempts})")
            return
        split.start_errors.append(f"attempt {split.start_attempts} at {self._now():.2f}s: "
                                  f"{reply.message} ({classify(reply)})")
        self.log(f"[{self._now():7.2f}s] reshard: start of {split.dataset} not acknowledged: "
                 f"{reply.message}")
        if start_refused(reply):
            split.error = f"start refused: {reply.message}"

    # ---- after the heal -----------------------------------------------------------------------

    @property
    def switched_at(self) -> float | None:
        """When the last split was seen switched (monotonic), None unless all were."""
        times = [s.switched_by for s in self.splits]
        return None if None in times or not times else max(times)

    def read_counts(self, attempts_s: float = 15.0) -> None:
        """Reads each dataset's shard count now (its progress document), just before the final
        reads: the count at which they and the checkers after them judge the dataset
        ("count_at_final_reads" in the result; None when no read answered within
        `attempts_s`, for all datasets together)."""
        deadline = time.monotonic() + attempts_s
        for split in self.splits:
            while split.count_at_final_reads is None and time.monotonic() < deadline:
                reply = self.http.request("GET", self._path(split), headers=self.headers)
                if reply.status == 200 and isinstance(reply.doc, dict):
                    split.count_at_final_reads = reply.doc.get("shard_count")
                else:
                    time.sleep(POLL_S)

    def list_rows(self, attempts_s: float = 30.0, page_size: int = 1000) -> None:
        """Every row of each split dataset through the public listing (GET .../vectors, shard
        by shard), as [id, value of metadata "w"] pairs, into the result ("listed"), or
        "list_error" when some page could not be read within `attempts_s` (for all datasets
        together: a cluster that cannot list is already failing other checkers)."""
        deadline = time.monotonic() + attempts_s
        for split in self.splits:
            rows: list[list[Any]] = []
            token = ""
            while True:
                query = f"?page_size={page_size}" + (
                    f"&page_token={urllib.parse.quote(token, safe='')}" if token else "")
                reply = self.http.request(
                    "GET", f"/datasets/{urllib.parse.quote(split.dataset, safe='')}/vectors"
                    + query, timeout_s=max(self.request_timeout_s, 10.0))
                if reply.status != 200 or not isinstance(reply.doc, dict):
                    if time.monotonic() > deadline:
                        split.list_error = f"listing {split.dataset}: {reply.message}"
                        break
                    time.sleep(POLL_S)
                    continue
                for vector in reply.doc.get("vectors") or []:
                    rows.append([vector.get("id"), (vector.get("metadata") or {}).get("w")])
                token = reply.doc.get("next_page_token") or ""
                if not token:
                    break
            split.listed = rows if split.list_error is None else None
            self.log(f"reshard: listed {len(rows)} row(s) of {split.dataset}"
                     + (f" ({split.list_error})" if split.list_error else ""))

    def result(self) -> dict:
        """What the verdict judges (chaos.verdict.reshard_finished, rows_placed)."""
        t0 = self.t0 if self.t0 is not None else 0.0
        splits = [split.to_dict(t0) for split in self.splits]
        return {"at_s": self.at_s, "bound_s": self.bound_s,
                "healed_at_s": None if self.healed_at is None else round(self.healed_at - t0, 3),
                "splits": splits}


def _progress_line(doc: dict) -> str:
    if doc.get("state") != "building":
        return f"{doc.get('shard_count')} shards ({doc.get('state')})"
    return (f"children {doc.get('children_built')}/{doc.get('children_needed')}, waiting "
            f"shards {doc.get('waiting_shards')}, 2PC in doubt {doc.get('txns_in_doubt')}")


__all__ = ["ReshardProbe", "Split", "splits_for", "classify_progress", "start_refused",
           "SWITCHED", "BUILDING", "NOT_STARTED", "UNEXPECTED"]
