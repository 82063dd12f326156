"""Plain records the shard engine reads and writes. No server types here."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np


@dataclass
class VectorRecord:
    id: str
    values: np.ndarray | None
    document_id: str = ""
    chunk_id: str = ""
    content: str = ""
    content_hash: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    content_type: str = ""
    language: str = ""
    chunk_index: int = 0
    chunk_count: int = 0
    model: str = ""
    created_at_ms: int = 0
    updated_at_ms: int = 0


# The fields of a stored vector that an update may change (its AIP-134 update paths). The id,
# the dataset and the timestamps are the store's own.
UPDATABLE_FIELDS = ("document_id", "chunk_id", "values", "content", "content_hash", "metadata",
                    "content_type", "language", "chunk_index", "chunk_count", "model")


class ExistingPolicy(Enum):
    ERROR = 0
    SKIP = 1
    OVERWRITE = 2
    REQUIRE = 3


@dataclass
class WriteResult:
    inserted: int = 0
    skipped: int = 0
    deleted: int = 0
    not_found: int = 0
    skipped_ids: list[str] = field(default_factory=list)


@dataclass
class Hit:
    record: VectorRecord
    score: float
    distance: float


@dataclass
class HitColumns:
    """The hits of a search that asks for no content, metadata or values, as columns in hit
    order (best first): what the node sends as node.proto PackedHits, built without a record
    per hit. `fields` holds, per hit, its non-empty short fields (document_id, chunk_id,
    content_hash, content_type, language, model, chunk_index, chunk_count) as a dict, and is
    None when no hit has any."""
    ids: list[str]
    scores: np.ndarray          # float32
    distances: np.ndarray       # float32
    created_at_ms: np.ndarray   # int64
    updated_at_ms: np.ndarray   # int64
    fields: list[dict] | None = None

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class SearchOutcome:
    hits: list[Hit]
    vectors_scanned: int
    index_hits: int
    database_time_ms: float
    filtered_out: int = 0
    strategy: str = "hnsw"
    # Set instead of `hits` when the caller asked for columns (ShardReplica.search_batch with
    # `packed`): then `hits` is empty.
    columns: HitColumns | None = None
