"""Operation histories recorded by concurrent chaos clients.

A history is a list of `Op`s. Each op is one client request: who issued it (`process`), what it
was (`kind`, `key`, `value`), when it was invoked and when it completed (`time.monotonic_ns`),
and how it ended:

* ``"ok"``      - the server answered; `output` holds the answer (a get's value, ``None`` for
                  absent, ``"not_found"`` for a delete that found nothing, ...).
* ``"fail"``    - the server answered with an error that guarantees the op was NOT applied
                  (validation error, a definite refusal). Checkers drop these ops.
* ``"unknown"`` - no definite answer (timeout, connection lost, leader changed mid-call). The op
                  may or may not have taken effect, possibly long after the client gave up, so its
                  completion time is open: `complete_ns` stays ``None`` (read: +infinity). An op
                  that was invoked but never resolved is also unknown.

Record with `HistoryRecorder` (thread-safe)::

    rec = HistoryRecorder()
    h = rec.invoke(process=3, kind="put", key="v17", value="w-3-42")
    try:
        client.put("v17", "w-3-42")
    except DefiniteError:
        rec.fail(h)
    except (TimeoutError, ConnectionError):
        rec.unknown(h)
    else:
        rec.ok(h)
    ...
    history = rec.history()
    dump_history(history, "failing-history.json")

or with the context manager, which marks an op left unresolved by an exception as unknown::

    with rec.operation(3, "get", key="v17") as call:
        call.ok(client.get("v17"))

Keys and values may be any JSON-able data plus tuples, sets/frozensets and dicts with non-string
keys: `dump_history`/`load_history` tag those so they round-trip exactly.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

OK = "ok"
FAIL = "fail"
UNKNOWN = "unknown"
STATUSES = (OK, FAIL, UNKNOWN)

FORMAT_VERSION = 1


@dataclass
class Op:
    """One client operation. `complete_ns` is None while unresolved and for unknown ops."""

    process: Any
    kind: str
    key: Any = None
    value: Any = None
    output: Any = None
    invoke_ns: int = 0
    complete_ns: int | None = None
    status: str = UNKNOWN
    id: int = -1
    error: str | None = None

    @property
    def definite(self) -> bool:
        return self.status == OK

    @property
    def end_ns(self) -> float:
        """Completion time, +inf for unknown ops (their effect may land at any later time)."""
        if self.status == UNKNOWN or self.complete_ns is None:
            return float("inf")
        return self.complete_ns

    def precedes(self, other: "Op") -> bool:
        """True when this op completed before `other` was invoked (real-time order)."""
        return self.end_ns < other.invoke_ns

    def to_dict(self) -> dict:
        return {"id": self.id, "process": _encode(self.process), "kind": self.kind,
                "key": _encode(self.key), "value": _encode(self.value),
                "output": _encode(self.output), "invoke_ns": self.invoke_ns,
                "complete_ns": self.complete_ns, "status": self.status, "error": self.error}

    @classmethod
    def from_dict(cls, data: dict) -> "Op":
        return cls(process=_decode(data.get("process")), kind=data["kind"],
                   key=_decode(data.get("key")), value=_decode(data.get("value")),
                   output=_decode(data.get("output")), invoke_ns=int(data["invoke_ns"]),
                   complete_ns=(None if data.get("complete_ns") is None
                                else int(data["complete_ns"])),
                   status=data.get("status", UNKNOWN), id=int(data.get("id", -1)),
                   error=data.get("error"))

    def describe(self, origin_ns: int = 0) -> str:
        """A short human-readable line, times in ms relative to `origin_ns`."""
        start = _fmt_ns(self.invoke_ns - origin_ns)
        end = "inf" if self.end_ns == float("inf") else _fmt_ns(self.complete_ns - origin_ns)
        what = f"{self.kind}"
        if self.key is not None:
            what += f"[{self.key!r}]"
        if self.value is not None:
            what += f"({self.value!r})"
        if self.status == OK:
            what += " -> ok" if self.output is None and self.kind != "get" else \
                f" -> {self.output!r}"
        else:
            what += f" -> {self.status}"
        return f"#{self.id} p{self.process} {what} @[{start}, {end}]"


def _fmt_ns(ns: float) -> str:
    if abs(ns) < 10_000:
        return f"{ns}ns"
    if abs(ns) < 10_000_000:
        return f"{ns / 1e3:.1f}us"
    return f"{ns / 1e6:.3f}ms"


class Call:
    """Handle returned by `HistoryRecorder.operation`; resolve it with ok/fail/unknown."""

    def __init__(self, recorder: "HistoryRecorder", handle: int):
        self.recorder = recorder
        self.handle = handle
        self.resolved = False

    def ok(self, output: Any = None) -> None:
        self.recorder.ok(self.handle, output)
        self.resolved = True

    def fail(self, error: str | None = None) -> None:
        self.recorder.fail(self.handle, error)
        self.resolved = True

    def unknown(self, error: str | None = None) -> None:
        self.recorder.unknown(self.handle, error)
        self.resolved = True


class HistoryRecorder:
    """Thread-safe history recorder. The handle of an op is its id (index in the history)."""

    def __init__(self, clock: Callable[[], int] = time.monotonic_ns):
        self._clock = clock
        self._lock = threading.Lock()
        self._ops: list[Op] = []
        self._resolved: list[bool] = []

    def invoke(self, process: Any, kind: str, key: Any = None, value: Any = None) -> int:
        with self._lock:
            handle = len(self._ops)
            self._ops.append(Op(process=process, kind=kind, key=key, value=value,
                                invoke_ns=self._clock(), id=handle))
            self._resolved.append(False)
            return handle

    def _resolve(self, handle: int, status: str, output: Any, error: str | None) -> None:
        with self._lock:
            now = self._clock()
            if not 0 <= handle < len(self._ops):
                raise KeyError(f"unknown op handle {handle}")
            if self._resolved[handle]:
                raise ValueError(f"op {handle} was already resolved as "
                                 f"{self._ops[handle].status}")
            op = self._ops[handle]
            op.status = status
            op.output = output
            op.error = error
            # An unknown op's effect may land at any later time: its completion stays open.
            op.complete_ns = None if status == UNKNOWN else now
            self._resolved[handle] = True

    def ok(self, handle: int, output: Any = None) -> None:
        self._resolve(handle, OK, output, None)

    def fail(self, handle: int, error: str | None = None) -> None:
        self._resolve(handle, FAIL, None, error)

    def unknown(self, handle: int, error: str | None = None) -> None:
        self._resolve(handle, UNKNOWN, None, error)

    @contextmanager
    def operation(self, process: Any, kind: str, key: Any = None,
                  value: Any = None) -> Iterator[Call]:
        """Invoke an op; an exception escaping the block leaves it unknown (and propagates)."""
        call = Call(self, self.invoke(process, kind, key, value))
        try:
            yield call
        except BaseException as exc:
            if not call.resolved:
                call.unknown(f"{type(exc).__name__}: {exc}")
            raise
        if not call.resolved:
            call.unknown("not resolved")

    def history(self) -> list[Op]:
        """A snapshot copy. Ops not yet resolved appear as unknown (open completion)."""
        with self._lock:
            return [Op(**{f: getattr(op, f) for f in _FIELDS}) for op in self._ops]

    def __len__(self) -> int:
        with self._lock:
            return len(self._ops)


_FIELDS = ("process", "kind", "key", "value", "output", "invoke_ns", "complete_ns", "status",
           "id", "error")


def validate_history(history: Iterable[Op]) -> None:
    """Raise ValueError on malformed ops (bad status, ok without completion, time reversal)."""
    seen: set[int] = set()
    for op in history:
        if op.status not in STATUSES:
            raise ValueError(f"op {op.id}: status {op.status!r} is not one of {STATUSES}")
        if op.status != UNKNOWN:
            if op.complete_ns is None:
                raise ValueError(f"op {op.id}: status {op.status} needs complete_ns")
            if op.complete_ns < op.invoke_ns:
                raise ValueError(f"op {op.id}: completes before it is invoked")
        if op.id >= 0:
            if op.id in seen:
                raise ValueError(f"op id {op.id} appears twice")
            seen.add(op.id)


def number_ops(history: Sequence[Op]) -> list[Op]:
    """Give ops without an id (id < 0) fresh unique ids, in place; returns the history."""
    used = {op.id for op in history if op.id >= 0}
    next_id = (max(used) + 1) if used else 0
    for op in history:
        if op.id < 0:
            op.id = next_id
            next_id += 1
    return list(history)


# ---- JSON -------------------------------------------------------------------------------------

_TAGS = ("__tuple__", "__set__", "__dict__", "__bytes__")


def _encode(x: Any) -> Any:
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, tuple):
        return {"__tuple__": [_encode(i) for i in x]}
    if isinstance(x, list):
        return [_encode(i) for i in x]
    if isinstance(x, (set, frozenset)):
        return {"__set__": sorted((_encode(i) for i in x), key=lambda e: json.dumps(
            e, sort_keys=True))}
    if isinstance(x, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in x):
            return {k: _encode(v) for k, v in x.items()}
        return {"__dict__": [[_encode(k), _encode(v)] for k, v in x.items()]}
    if isinstance(x, (bytes, bytearray)):
        return {"__bytes__": base64.b64encode(bytes(x)).decode("ascii")}
    if hasattr(x, "tolist"):  # numpy arrays and scalars
        return _encode(x.tolist())
    raise TypeError(f"cannot encode {type(x).__name__} in a history")


def _decode(x: Any) -> Any:
    if isinstance(x, list):
        return [_decode(i) for i in x]
    if isinstance(x, dict):
        if len(x) == 1:
            (tag, body), = x.items()
            if tag == "__tuple__":
                return tuple(_decode(i) for i in body)
            if tag == "__set__":
                return frozenset(_decode(i) for i in body)
            if tag == "__dict__":
                return {_decode(k): _decode(v) for k, v in body}
            if tag == "__bytes__":
                return base64.b64decode(body)
        return {k: _decode(v) for k, v in x.items()}
    return x


def history_to_json(history: Iterable[Op], meta: dict | None = None) -> str:
    return json.dumps({"version": FORMAT_VERSION, "meta": meta or {},
                       "ops": [op.to_dict() for op in history]}, indent=1)


def history_from_json(text: str) -> list[Op]:
    data = json.loads(text)
    if isinstance(data, list):  # a bare list of ops is accepted too
        return [Op.from_dict(d) for d in data]
    if data.get("version", FORMAT_VERSION) != FORMAT_VERSION:
        raise ValueError(f"unsupported history format version {data.get('version')}")
    return [Op.from_dict(d) for d in data["ops"]]


def dump_history(history: Iterable[Op], path: str | Path, meta: dict | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(history_to_json(history, meta))
    return path


def load_history(path: str | Path) -> list[Op]:
    return history_from_json(Path(path).read_text())


# ---- helpers for models and checkers ----------------------------------------------------------

def freeze(x: Any) -> Any:
    """A hashable, comparison-stable form of a value (lists -> tuples, dicts/sets -> frozen)."""
    if isinstance(x, (list, tuple)):
        return tuple(freeze(i) for i in x)
    if isinstance(x, (set, frozenset)):
        return frozenset(freeze(i) for i in x)
    if isinstance(x, dict):
        return ("__dict__", frozenset((freeze(k), freeze(v)) for k, v in x.items()))
    if isinstance(x, (bytearray,)):
        return bytes(x)
    if hasattr(x, "tolist") and not isinstance(x, (bool, int, float, str, bytes)):
        return freeze(x.tolist())
    return x


def origin_of(history: Iterable[Op]) -> int:
    """The earliest invoke time, handy as the origin for `Op.describe`."""
    return min((op.invoke_ns for op in history), default=0)


__all__ = ["Op", "Call", "HistoryRecorder", "OK", "FAIL", "UNKNOWN", "STATUSES",
           "validate_history", "number_ops", "history_to_json", "history_from_json",
           "dump_history", "load_history", "freeze", "origin_of"]
