"""The operation log of one shard copy: every write the copy applied, in sequence-number order,
so that a copy that fell behind can catch up from the primary's log instead of copying files.

On disk it is a directory of segment files, `<first seq, 20 digits>.seg`, each a run of records:

    seq (u64) | term (u64) | length (u32) | payload (length bytes) | crc32 of all before (u32)

all big-endian. The payload is a serialized `ReplicatedOp` (proto/node.proto). A batch of records
is appended and fsynced before `append` returns. On open, a torn or corrupt tail (a crash in the
middle of an append) is cut off at the last whole record: such a record was never acknowledged.
Old segments are deleted once the log holds more than `ops_max` operations after them, never
while they hold an op at or past `retain_from()` (the ops a restart must replay into a store
that group commits).

Why our own format: the log must be read from an arbitrary sequence number, truncated at a torn
tail and trimmed from the front, with one fsync per batch; a database (sqlite) would add a second
write-ahead log and its own fsyncs to every write, and Deep Lake's version history is per
dataset commit, not per operation.
"""

from __future__ import annotations

import os
import struct
import threading
import zlib
from dataclasses import dataclass

_HEADER = struct.Struct(">QQI")
_CRC = struct.Struct(">I")
_SUFFIX = ".seg"


@dataclass(frozen=True)
class LoggedOp:
    seq: int
    term: int
    payload: bytes


@dataclass
class _Segment:
    first_seq: int
    path: str
    last_seq: int = 0


class OpLog:
    """Thread-safe. Sequence numbers are contiguous: append only seq == last_seq + 1."""

    def __init__(self, directory: str, segment_ops_max: int, ops_max: int):
        self.directory = directory
        self.segment_ops_max = segment_ops_max
        self.ops_max = ops_max
        self._lock = threading.Lock()
        self._segments: list[_Segment] = []
        self.last_seq = 0
        self.last_term = 0
        # Optional: returns the lowest seq that must stay held (ops the store has not
        # committed yet, which a restart replays), or None; trimming never drops it.
        self.retain_from = None
        os.makedirs(directory, exist_ok=True)
        self._open()

    # ---- open and recovery ---------------------------------------------------------------------

    def _open(self) -> None:
        self._base = self._read_base()
        self.last_seq, self.last_term = self._base
        names = sorted(n for n in os.listdir(self.directory) if n.endswith(_SUFFIX))
        for name in names:
            segment = _Segment(int(name[:-len(_SUFFIX)]), os.path.join(self.directory, name))
            good_bytes, last = self._scan(segment.path)
            if last is None:
                os.remove(segment.path)
                continue
            if os.path.getsize(segment.path) != good_bytes:
                # A torn append: keep the whole records only (none of them was acknowledged).
                with open(segment.path, "r+b") as handle:
                    handle.truncate(good_bytes)
                    handle.flush()
                    os.fsync(handle.fileno())
            segment.last_seq = last.seq
            self._segments.append(segment)
            self.last_seq, self.last_term = last.seq, last.term

    def _read_base(self) -> tuple[int, int]:
        """(seq, term) just before the first record this log can hold: (0, 0), or where a
        file copy left the copy (reset)."""
        try:
            with open(os.path.join(self.directory, "base"), encoding="ascii") as handle:
                seq, term = handle.read().split()
                return int(seq), int(term)
        except FileNotFoundError:
            return 0, 0

    @staticmethod
    def _records(path: str):
        """(end offset, LoggedOp) for each whole, intact record of a segment file."""
        with open(path, "rb") as handle:
            data = handle.read()
        offset = 0
        while offset + _HEADER.size <= len(data):
            seq, term, length = _HEADER.unpack_from(data, offset)
            end = offset + _HEADER.size + length + _CRC.size
            if end > len(data):
                return
            (crc,) = _CRC.unpack_from(data, end - _CRC.size)
            if zlib.crc32(data[offset:end - _CRC.size]) != crc:
                return
            yield end, LoggedOp(seq, term, data[offset + _HEADER.size:end - _CRC.size])
            offset = end

    def _scan(self, path: str) -> tuple[int, LoggedOp | None]:
        good, last = 0, None
        for end, op in self._records(path):
            good, last = end, op
        return good, last

    # ---- writing -------------------------------------------------------------------------------

    def append(self, ops: list[LoggedOp]) -> None:
        """Appends `ops` (contiguous after last_seq, terms never decreasing) and fsyncs.
        Raises ValueError for a sequence gap or a term that goes back."""
        if not ops:
            return
        with self._lock:
            expected, term = self.last_seq + 1, self.last_term
            for op in ops:
                if op.seq != expected or op.term < term:
                    raise ValueError(f"op log expects seq {expected} at term >= {term}, got "
                                     f"seq {op.seq} term {op.term}")
                expected, term = op.seq + 1, op.term
            segment = self._writable_segment(ops[0].seq)
            blob = bytearray()
            for op in ops:
                record = _HEADER.pack(op.seq, op.term, len(op.payload)) + op.payload
                blob += record + _CRC.pack(zlib.crc32(record))
            with open(segment.path, "ab") as handle:
                handle.write(blob)
                handle.flush()
                os.fsync(handle.fileno())
            segment.last_seq = ops[-1].seq
            self.last_seq, self.last_term = ops[-1].seq, ops[-1].term
            self._trim()

    def _writable_segment(self, first_seq: int) -> _Segment:
        current = self._segments[-1] if self._segments else None
        if current is not None and \
                current.last_seq - current.first_seq + 1 < self.segment_ops_max:
            return current
        segment = _Segment(first_seq, os.path.join(self.directory,
                                                   f"{first_seq:020d}{_SUFFIX}"))
        open(segment.path, "ab").close()
        _fsync_dir(self.directory)
        self._segments.append(segment)
        return segment

    def _trim(self) -> None:
        floor = self.retain_from() if self.retain_from is not None else None
        while len(self._segments) > 1 and \
                self.last_seq - self._segments[0].last_seq >= self.ops_max and \
                (floor is None or self._segments[0].last_seq < floor):
            os.remove(self._segments.pop(0).path)

    def reset(self, last_seq: int, last_term: int) -> None:
        """Forgets every record: the copy's content was replaced wholesale (a file copy) up to
        `last_seq`, so the next append is last_seq + 1."""
        with self._lock:
            base = os.path.join(self.directory, "base")
            with open(base + ".tmp", "w", encoding="ascii") as handle:
                handle.write(f"{last_seq} {last_term}\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(base + ".tmp", base)
            for segment in self._segments:
                os.remove(segment.path)
            _fsync_dir(self.directory)
            self._segments = []
            self._base = (last_seq, last_term)
            self.last_seq, self.last_term = last_seq, last_term

    # ---- reading -------------------------------------------------------------------------------

    @property
    def first_seq(self) -> int:
        """The lowest sequence number still held (last_seq + 1 when none is)."""
        with self._lock:
            return self._segments[0].first_seq if self._segments else self.last_seq + 1

    def read_from(self, seq: int, ops_max: int, bytes_max: int) -> list[LoggedOp] | None:
        """Up to ops_max records from `seq` on (at least one, whatever its size); [] when seq is
        past the end; None when the log no longer holds `seq` (trimmed: copy files instead)."""
        with self._lock:
            segments = list(self._segments)
            last = self.last_seq
        if seq > last:
            return []
        if seq < 1 or not segments or seq < segments[0].first_seq:
            return None
        out: list[LoggedOp] = []
        size = 0
        for segment in segments:
            if not segment.last_seq or segment.last_seq < seq:
                continue
            for _, op in self._records(segment.path):
                if op.seq < seq:
                    continue
                if out and (len(out) >= ops_max or size + len(op.payload) > bytes_max):
                    return out
                out.append(op)
                size += len(op.payload)
        return out

    def term_at(self, seq: int) -> int | None:
        """The term of record `seq`, 0 for seq 0, None when not held."""
        if seq == self.last_seq:
            return self.last_term
        if seq == self._base[0]:
            return self._base[1]
        found = self.read_from(seq, 1, 1)
        return found[0].term if found and found[0].seq == seq else None


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
