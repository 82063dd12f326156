"""Seeded synthetic datasets and brute-force ground truth.

Two generators:
- clustered(): gaussian clusters around random unit centres (default 100 clusters, 128-d), a
  stand-in for real embedding collections, which are clumpy.
- isotropic(): i.i.d. standard normal vectors (default 384-d), the hard case for HNSW.

ground_truth() ranks by the same score shard/scoring.py gives (higher is better):
- cosine: vectors unit-normalized, score = inner product;
- ip: score = inner product of the raw vectors;
- l2: score falls with Euclidean distance (ranked by -||q - x||^2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GENERATORS = ("clustered", "isotropic")


@dataclass
class Dataset:
    name: str
    metric: str
    data: np.ndarray      # (n, dim) float32, as stored (normalized for cosine)
    queries: np.ndarray   # (q, dim) float32, as searched (normalized for cosine)
    truth: np.ndarray     # (q, k) int64 row numbers of the true top-k, best first
    k: int

    @property
    def dim(self) -> int:
        return int(self.data.shape[1])

    @property
    def size(self) -> int:
        return int(self.data.shape[0])


def normalize(x: np.ndarray) -> np.ndarray:
    """Unit rows, computed in float64 like tributary.validation.as_vector, returned as float32."""
    wide = x.astype(np.float64)
    norms = np.linalg.norm(wide, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (wide / norms).astype(np.float32)


def _gaussian(rng: np.random.Generator, n: int, dim: int, chunk: int = 50_000) -> np.ndarray:
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        out[start:stop] = rng.standard_normal((stop - start, dim), dtype=np.float32)
    return out


def clustered(n: int, dim: int = 128, clusters: int = 100, spread: float = 0.75,
              seed: int = 0) -> np.ndarray:
    """n points around `clusters` random unit centres; the noise has norm ~`spread`.

    The centres come from `seed` alone, so data and queries drawn with the same seed but
    different `stream`s (see make_dataset) share their clusters."""
    centres = normalize(np.random.default_rng(seed).standard_normal((clusters, dim)))
    rng = np.random.default_rng([seed, n, 1])
    assign = rng.integers(0, clusters, size=n)
    points = _gaussian(rng, n, dim)
    points *= np.float32(spread / np.sqrt(dim))
    points += centres[assign]
    return points


def _clustered_queries(count: int, dim: int, clusters: int, spread: float,
                       seed: int) -> np.ndarray:
    centres = normalize(np.random.default_rng(seed).standard_normal((clusters, dim)))
    rng = np.random.default_rng([seed, count, 2])
    assign = rng.integers(0, clusters, size=count)
    points = _gaussian(rng, count, dim) * np.float32(spread / np.sqrt(dim))
    return points + centres[assign]


def isotropic(n: int, dim: int = 384, seed: int = 0, stream: int = 1) -> np.ndarray:
    return _gaussian(np.random.default_rng([seed, n, stream]), n, dim)


def ground_truth(data: np.ndarray, queries: np.ndarray, k: int, metric: str,
                 chunk: int = 20_000) -> np.ndarray:
    """Row numbers of the exact top-k for each query, best first (chunked matmul, numpy only).

    `data` and `queries` must already be as stored/searched (normalized for cosine)."""
    if metric not in ("cosine", "ip", "l2"):
        raise ValueError(f"unknown metric {metric!r}")
    nq = queries.shape[0]
    k = min(k, data.shape[0])
    best_scores = np.full((nq, k), -np.inf, dtype=np.float64)
    best_ids = np.zeros((nq, k), dtype=np.int64)
    q = queries.astype(np.float32)
    for start in range(0, data.shape[0], chunk):
        block = data[start:start + chunk].astype(np.float32)
        scores = (q @ block.T).astype(np.float64)
        if metric == "l2":
            # -||q - x||^2 = 2 q.x - ||x||^2 - ||q||^2; the last term is constant per query.
            scores = 2.0 * scores - np.einsum("ij,ij->i", block, block).astype(np.float64)[None, :]
        kk = min(k, block.shape[0])
        part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        part_scores = np.take_along_axis(scores, part, axis=1)
        all_scores = np.concatenate([best_scores, part_scores], axis=1)
        all_ids = np.concatenate([best_ids, part + start], axis=1)
        keep = np.argpartition(-all_scores, k - 1, axis=1)[:, :k]
        best_scores = np.take_along_axis(all_scores, keep, axis=1)
        best_ids = np.take_along_axis(all_ids, keep, axis=1)
    order = np.argsort(-best_scores, axis=1, kind="stable")
    return np.take_along_axis(best_ids, order, axis=1)


def make_dataset(kind: str, n: int, queries: int, metric: str = "cosine", dim: int | None = None,
                 k: int = 10, seed: int = 0, clusters: int = 100) -> Dataset:
    """A seeded dataset with its queries (drawn from the same distribution, not from the data)
    and exact ground truth."""
    if kind == "clustered":
        dim = dim or 128
        data = clustered(n, dim, clusters=clusters, seed=seed)
        qs = _clustered_queries(queries, dim, clusters, 0.75, seed)
        name = f"clustered-{dim}d"
    elif kind == "isotropic":
        dim = dim or 384
        data = isotropic(n, dim, seed=seed, stream=1)
        qs = isotropic(queries, dim, seed=seed + 1, stream=2)
        name = f"isotropic-{dim}d"
    else:
        raise ValueError(f"unknown dataset kind {kind!r}; expected one of {GENERATORS}")
    if metric == "cosine":
        data, qs = normalize(data), normalize(qs)
    data = np.ascontiguousarray(data, dtype=np.float32)
    qs = np.ascontiguousarray(qs, dtype=np.float32)
    return Dataset(name=name, metric=metric, data=data, queries=qs,
                   truth=ground_truth(data, qs, k, metric), k=k)


def recall_at_k(found: list[list[int]], truth: np.ndarray, k: int) -> float:
    """Mean |found[:k] & truth[:k]| / k over the queries."""
    if not found:
        return float("nan")
    hits = 0
    for got, expected in zip(found, truth):
        hits += len(set(int(g) for g in list(got)[:k]) & set(expected[:k].tolist()))
    return hits / (len(found) * k)
