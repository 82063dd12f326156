"""Conversions between internal proto messages and shard records."""

from __future__ import annotations

from proto import deeplake_service_pb2 as pb
from shard.records import VectorRecord
from tributary.errors import InvalidArgument
from tributary.validation import as_matrix, unpack_matrix


def records_from_protos(vectors, dimensions: int, metric: str,
                        packed: bytes = b"") -> list[VectorRecord]:
    """Shard records from proto vectors, validating and normalizing all values at once.

    `packed` holds the vectors' values as one float32 matrix (node.proto's upsert_values); when
    it is empty, each vector carries its own values (the older encoding)."""
    vectors = list(vectors)
    names = [v.id for v in vectors]
    if packed:
        if any(len(v.values) for v in vectors):
            raise InvalidArgument("a batch carries values both packed and per vector")
        matrix = unpack_matrix(packed, len(vectors), dimensions, metric, names=names)
    else:
        matrix = as_matrix([v.values for v in vectors], dimensions, metric, names=names)
    # The ids read once, together: each read of a upb string field makes a new str, and the
    # ids are what the replica keeps (IdMap) while the rest of each record is dropped after the
    # write; made in one run, they do not pin the memory of the records' other objects.
    return [_record(vector, values, vid) for vector, values, vid in zip(vectors, matrix, names)]


def update_records_from_protos(vectors, paths: frozenset[str], dimensions: int, metric: str,
                               packed: bytes = b"") -> list[VectorRecord]:
    """Shard records for an update (ShardReplica.update) that changes the fields in `paths`. An
    unset field reads as empty, which is what a named field absent from the body means: clear
    it. Values are read only when `paths` names them; otherwise the vectors must carry none
    and the records hold None (the stored values stay)."""
    vectors = list(vectors)
    if "values" in paths:
        return records_from_protos(vectors, dimensions, metric, packed)
    if packed or any(len(v.values) for v in vectors):
        raise InvalidArgument("an update whose paths do not name values carries no values")
    return [_record(vector, None) for vector in vectors]


def _record(vector, values, vid: str | None = None) -> VectorRecord:
    # ListFields names only the fields that are set: batches are mostly ids and values, and
    # reading every field of every vector cost more than building the records.
    fields = {fd.name: value for fd, value in vector.ListFields() if fd.name in _RECORD_FIELDS}
    metadata = fields.pop("metadata", None)
    return VectorRecord(id=vector.id if vid is None else vid, values=values,
                        metadata=dict(metadata) if metadata else {}, **fields)


# Vector fields a shard record keeps besides id and values (which come separately).
_RECORD_FIELDS = frozenset(("document_id", "chunk_id", "content", "content_hash", "metadata",
                            "content_type", "language", "chunk_index", "chunk_count", "model"))


def record_to_proto(record: VectorRecord, dimensions: int) -> pb.Vector:
    vector = pb.Vector()
    fill_vector(vector, record, dimensions)
    return vector


def fill_vector(vector: pb.Vector, record: VectorRecord, dimensions: int) -> None:
    """Writes a record into an empty Vector message in place (e.g. one just added to a response's
    repeated field, which saves copying a built message into it). Empty fields are skipped:
    proto3 does not send them anyway, and each assignment costs a Python-level call."""
    vector.id = record.id
    for name in _TEXT_FIELDS:
        value = getattr(record, name)
        if value:
            setattr(vector, name, value)
    if record.metadata:
        vector.metadata.update(record.metadata)
    if record.chunk_index:
        vector.chunk_index = record.chunk_index
    if record.chunk_count:
        vector.chunk_count = record.chunk_count
    vector.dimensions = dimensions
    # Floored seconds and nanos, as Timestamp.FromMilliseconds computes them (that helper is pure
    # Python, and every hit carries two timestamps).
    vector.created_at.seconds, rest = divmod(int(record.created_at_ms), 1000)
    vector.created_at.nanos = rest * 1_000_000
    vector.updated_at.seconds, rest = divmod(int(record.updated_at_ms), 1000)
    vector.updated_at.nanos = rest * 1_000_000
    if record.values is not None:
        vector.values.extend(record.values.tolist())


_TEXT_FIELDS = ("document_id", "chunk_id", "content", "content_hash", "content_type", "language",
                "model")
