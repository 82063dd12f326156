"""Distance-to-score conversion. Scores are comparable across shards of one dataset, so the
router merges shard results by score alone; a higher score is always a better match.

- cosine: vectors are unit-normalized at write time and searched by inner product.
  score = cosine similarity in [-1, 1]; distance = 1 - similarity.
- ip: score = inner product; distance = 1 - inner product (hnswlib's own distance).
- l2: distance = Euclidean distance; score = 1 / (1 + distance), in (0, 1], monotone decreasing.
"""

from __future__ import annotations

import numpy as np

HNSW_SPACE = {"cosine": "ip", "ip": "ip", "l2": "l2"}


def scores_from_hnsw(metric: str, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Converts hnswlib distances to (score, distance) arrays."""
    raw = raw.astype(np.float64)
    if metric == "l2":
        distance = np.sqrt(np.maximum(raw, 0.0))
        return 1.0 / (1.0 + distance), distance
    return 1.0 - raw, raw
