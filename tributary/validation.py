"""Input checks shared by the router and the shard engine. Each raises InvalidArgument with a
message that says what is wrong, before anything is written."""

from __future__ import annotations

import math
import unicodedata

import numpy as np

from tributary import limits
from tributary.errors import InvalidArgument

METRICS = ("cosine", "l2", "ip")
_FLOAT32_MAX = float(np.finfo(np.float32).max)
INDEX_TYPES = ("hnsw", "flat")


def check_name(name: str, what: str = "dataset name") -> str:
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"{what} must be a non-empty string")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:      # lone surrogates: aiohttp's stand-ins for non-UTF-8 bytes
        raise InvalidArgument(f"{what} is not valid UTF-8") from None
    if len(encoded) > limits.name_bytes_max:
        raise InvalidArgument(f"{what} is longer than {limits.name_bytes_max} bytes")
    if name in (".", ".."):
        raise InvalidArgument(f"{what} must not be '.' or '..', which read as paths")
    if "/" in name or "\\" in name or ".." in name:
        raise InvalidArgument(f"{what} '{name}' must not contain '/', '\\' or '..'")
    # Printable ASCII has none of these categories (checked in C); others are checked per char.
    if not (name.isascii() and name.isprintable()) and any(
            unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn") for ch in name):
        raise InvalidArgument(f"{what} must not contain control or unassigned characters")
    if name.strip() != name:
        raise InvalidArgument(f"{what} must not start or end with whitespace")
    return name


def check_vector_id(vector_id: str) -> str:
    if not isinstance(vector_id, str) or not vector_id:
        raise InvalidArgument("vector id must be a non-empty string")
    if vector_id.isascii() and vector_id.isprintable():
        # The common case, checked in C: in ASCII, exactly the control characters (Cc) are not
        # printable, and a character is one byte.
        if len(vector_id) > limits.vector_id_bytes_max:
            raise InvalidArgument(f"vector id is longer than {limits.vector_id_bytes_max} bytes")
        return vector_id
    if len(vector_id.encode("utf-8")) > limits.vector_id_bytes_max:
        raise InvalidArgument(f"vector id is longer than {limits.vector_id_bytes_max} bytes")
    if any(unicodedata.category(ch) == "Cc" for ch in vector_id):
        raise InvalidArgument("vector id must not contain control characters")
    return vector_id


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise InvalidArgument(f"metric_type must be one of {', '.join(METRICS)}, got '{metric}'")
    return metric


def check_index_type(index_type: str) -> str:
    if index_type not in INDEX_TYPES:
        raise InvalidArgument(f"index_type must be one of {', '.join(INDEX_TYPES)}, "
                              f"got '{index_type}'")
    return index_type


def check_dimensions(dimensions: int) -> int:
    if isinstance(dimensions, bool) or not isinstance(dimensions, int):
        raise InvalidArgument("dimensions must be an integer")
    if not 1 <= dimensions <= limits.dimensions_max:
        raise InvalidArgument(f"dimensions must be between 1 and {limits.dimensions_max}, "
                              f"got {dimensions}")
    return dimensions


def as_vector(values, dimensions: int, metric: str, what: str = "vector") -> np.ndarray:
    """Returns the values as float32, normalized for cosine. Raises InvalidArgument for an empty,
    wrong-length, non-numeric, NaN or Inf vector, and for a zero vector under cosine."""
    if values is None or len(values) == 0:
        raise InvalidArgument(f"{what} is empty")
    # A numeric numpy array holds numbers by construction; only other sequences need the
    # per-element scan (which costs more than the rest of this function at 128-d).
    numeric = isinstance(values, np.ndarray) and values.dtype.kind in "fiu"
    if not numeric and any(isinstance(v, (bool, str, bytes)) for v in values):
        raise InvalidArgument(f"{what} must contain only numbers")
    if len(values) != dimensions:
        raise InvalidArgument(f"{what} has dimension {len(values)}, dataset expects {dimensions}")
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidArgument(f"{what} must contain only numbers") from None
    if array.ndim != 1:
        raise InvalidArgument(f"{what} must be a flat list of numbers")
    # One reduction answers both range checks: the largest magnitude is NaN if any value is
    # NaN, inf if any is infinite. (A search validates one vector per request, so the number of
    # numpy calls here is what it costs; 1-d norms are taken as sqrt(dot), as numpy does.)
    largest = float(np.max(np.abs(array)))
    if not math.isfinite(largest):
        raise InvalidArgument(f"{what} contains NaN or Inf")
    if largest > _FLOAT32_MAX:
        raise InvalidArgument(f"{what} has a value outside the float32 range")
    stored = array.astype(np.float32)
    if metric == "cosine":
        # Normalize in float64 from the float32 values actually stored, so neither huge
        # (norm overflows float32) nor tiny (norm underflows) components lose the unit norm.
        wide = stored.astype(np.float64)
        norm = math.sqrt(float(wide @ wide))
        if norm == 0.0 or not math.isfinite(norm):
            raise InvalidArgument(f"{what} is a zero vector, which has no cosine direction")
        unit = wide / norm
        unit_norm = math.sqrt(float(unit @ unit))
        if not math.isfinite(unit_norm) or abs(unit_norm - 1.0) > 1e-3:
            raise InvalidArgument(f"{what} is too small to normalize in float32")
        stored = unit.astype(np.float32)
        back = stored.astype(np.float64)
        if math.sqrt(float(back @ back)) < 0.5:
            raise InvalidArgument(f"{what} is too small to normalize in float32")
    return stored


def as_matrix(rows: list, dimensions: int, metric: str, names: list[str] | None = None
              ) -> np.ndarray:
    """as_vector for a whole batch at once (vectorized): a (n, dimensions) float32 matrix,
    cosine rows normalized. Raises InvalidArgument naming the first bad row, with the message
    as_vector would give for it."""
    if len(rows) == 0:
        return np.zeros((0, dimensions), np.float32)
    if isinstance(rows, np.ndarray) and rows.ndim == 2 and rows.dtype.kind in "fiu":
        if rows.shape[1] != dimensions:
            as_vector(rows[0], dimensions, metric, what=_row_name(0, names))
        return _checked_matrix(rows.astype(np.float64, copy=False), rows, dimensions, metric,
                               names)
    if any(len(r) != dimensions for r in rows):
        bad = next(i for i, r in enumerate(rows) if len(r) != dimensions)
        as_vector(rows[bad], dimensions, metric, what=_row_name(bad, names))
    try:
        wide = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError):
        wide = None
    if wide is None or wide.ndim != 2 or wide.shape[1] != dimensions:
        for i, r in enumerate(rows):
            as_vector(r, dimensions, metric, what=_row_name(i, names))
        raise InvalidArgument("vectors must be flat lists of numbers")
    return _checked_matrix(wide, rows, dimensions, metric, names)


def _checked_matrix(wide: np.ndarray, rows, dimensions: int, metric: str,
                    names: list[str] | None) -> np.ndarray:
    """as_matrix's checks on a (n, dimensions) float64 matrix; `rows` are the caller's rows,
    re-checked one by one with as_vector only to word the error for the first bad one."""
    # Each pass over a 5000 x 128 batch costs about a millisecond, so the checks share them: a
    # row's largest magnitude is NaN when it holds a NaN and inf when it holds an inf, which the
    # one comparison with the float32 maximum refuses along with out-of-range values.
    in_range = np.abs(wide).max(axis=1) <= _FLOAT32_MAX
    if not in_range.all():
        bad = int(np.flatnonzero(~in_range)[0])
        as_vector(rows[bad], dimensions, metric, what=_row_name(bad, names))
    stored = wide.astype(np.float32)
    if metric != "cosine":
        return stored
    back = stored.astype(np.float64)
    norms = _row_norms(back)
    usable = (norms > 0) & np.isfinite(norms)
    if not usable.all():
        bad = int(np.flatnonzero(~usable)[0])
        as_vector(rows[bad], dimensions, metric, what=_row_name(bad, names))
    back /= norms[:, None]
    unit = back.astype(np.float32)
    unit_norms = _row_norms(unit.astype(np.float64))
    if (np.abs(unit_norms - 1.0) > 1e-3).any():
        # Tiny components: fall back to the exact per-row rules for the odd row.
        return np.stack([as_vector(r, dimensions, metric, what=_row_name(i, names))
                         for i, r in enumerate(rows)])
    return unit


# Vector values cross the internal gRPC hop as packed little-endian float32 (proto/node.proto):
# a repeated float field costs a Python float object per value to build and to read.
PACKED_DTYPE = np.dtype("<f4")


def pack_values(matrix: np.ndarray) -> bytes:
    """A validated (n, d) or (d,) float32 array as packed bytes, row-major."""
    return np.ascontiguousarray(matrix, dtype=PACKED_DTYPE).tobytes()


def unpack_matrix(packed: bytes, rows: int, dimensions: int, metric: str,
                  names: list[str] | None = None) -> np.ndarray:
    """The (rows, dimensions) float32 matrix packed by pack_values, checked again like
    as_matrix (finite, float32 range, unit rows for cosine). The sender already validated it,
    so this costs a few vectorized passes and never changes a valid matrix's meaning."""
    if len(packed) != rows * dimensions * PACKED_DTYPE.itemsize:
        raise InvalidArgument(f"packed values hold {len(packed)} bytes, expected {rows} "
                              f"vectors of dimension {dimensions}")
    matrix = np.frombuffer(packed, dtype=PACKED_DTYPE).reshape(rows, dimensions)
    if metric == "cosine":
        norms = _row_norms(matrix.astype(np.float64))
        if np.all(np.abs(norms - 1.0) <= 1e-3):
            # Already unit rows, as the sender normalized them: keep the exact stored floats.
            return matrix.astype(np.float32)
    elif np.isfinite(matrix).all():
        return matrix.astype(np.float32)
    return as_matrix(matrix, dimensions, metric, names)


def unpack_vector(packed: bytes, dimensions: int, metric: str,
                  what: str = "vector") -> np.ndarray:
    """One vector packed by pack_values, checked like as_vector."""
    if len(packed) != dimensions * PACKED_DTYPE.itemsize:
        raise InvalidArgument(f"{what} has dimension {len(packed) // PACKED_DTYPE.itemsize}, "
                              f"dataset expects {dimensions}")
    vector = np.frombuffer(packed, dtype=PACKED_DTYPE)
    if metric == "cosine":
        if abs(float(np.linalg.norm(vector.astype(np.float64))) - 1.0) <= 1e-3:
            return vector.astype(np.float32)
    elif np.isfinite(vector).all():
        return vector.astype(np.float32)
    return as_vector(vector, dimensions, metric, what=what)


def _row_norms(matrix: np.ndarray) -> np.ndarray:
    """Euclidean norm of each row. einsum computes it in one pass, several times faster than
    np.linalg.norm(axis=1), which squares into a temporary first; overflow to inf is the same."""
    return np.sqrt(np.einsum("ij,ij->i", matrix, matrix))


def _row_name(i: int, names: list[str] | None) -> str:
    return f"vector {i}" + (f" ('{names[i]}')" if names and names[i] else "")


def check_top_k(top_k: int) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, int):
        raise InvalidArgument("top_k must be an integer")
    if not 1 <= top_k <= limits.top_k_max:
        raise InvalidArgument(f"top_k must be between 1 and {limits.top_k_max}, got {top_k}")
    return top_k


def check_batch_size(count: int) -> None:
    if count <= 0:
        raise InvalidArgument("the batch holds no vectors")
    if count > limits.batch_vectors_max:
        raise InvalidArgument(f"the batch holds {count} vectors, more than batch_vectors_max="
                              f"{limits.batch_vectors_max}")


def check_metadata(metadata) -> dict[str, str]:
    """Metadata is a flat map of string keys to scalar values, stored as strings."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InvalidArgument("metadata must be an object of string keys to scalar values")
    if len(metadata) > limits.metadata_keys_max:
        raise InvalidArgument(f"metadata has more than {limits.metadata_keys_max} keys")
    out: dict[str, str] = {}
    size = 0
    for key, value in metadata.items():
        if not isinstance(key, str) or not key:
            raise InvalidArgument("metadata keys must be non-empty strings")
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (int, float)):
            if isinstance(value, float) and not math.isfinite(value):
                raise InvalidArgument(f"metadata '{key}' is NaN or Inf")
            value = repr(value) if isinstance(value, float) else str(value)
        elif not isinstance(value, str):
            raise InvalidArgument(f"metadata '{key}' must be a string, number or boolean")
        size += len(key.encode()) + len(value.encode())
        out[key] = value
    if size > limits.metadata_bytes_max:
        raise InvalidArgument(f"metadata is larger than {limits.metadata_bytes_max} bytes")
    return out


# ---- the same rules as JSON Schemas, for the OpenAPI document -----------------------------------
# A JSON Schema cannot count UTF-8 bytes or name Unicode categories, so each schema below states
# the part of its rule that a pattern can say exactly (printable ASCII, or characters that are
# at most 4 bytes long), and its description states the whole rule. Everything the schema
# accepts, the check above accepts too.

_NAME_CHAR = r"!-.0-\[\]-~"          # printable ASCII but space, '/' and '\'
_NAME_INNER = r" -.0-\[\]-~"          # the same, with space (not at either end)
NAME_PATTERN = (rf"^(?!\.\.?$)(?!.*\.\.)[{_NAME_CHAR}](?:[{_NAME_INNER}]*[{_NAME_CHAR}])?$")


def name_json_schema(what: str = "dataset name", allow_empty: bool = False) -> dict:
    """The JSON Schema of a name check_name accepts (or "", when allow_empty)."""
    pattern = NAME_PATTERN if not allow_empty else f"^$|{NAME_PATTERN}"
    return {"type": "string", "minLength": 0 if allow_empty else 1,
            "maxLength": limits.name_bytes_max, "pattern": pattern,
            "description": f"{what}: 1 to {limits.name_bytes_max} bytes of UTF-8, not '.' or "
                           "'..', without '/', '\\' or '..', without control, format, "
                           "private-use or unassigned characters, and without whitespace at "
                           "either end. The pattern gives the printable-ASCII part of the "
                           "rule; other Unicode letters, digits and symbols are accepted too."
                           + (" Empty: the default." if allow_empty else "")}


VECTOR_ID_PATTERN = r"^[^\u0000-\u001F\u007F-\u009F]*$"


def vector_id_json_schema(allow_empty: bool = False) -> dict:
    """The JSON Schema of an id check_vector_id accepts (or "", when allow_empty). maxLength
    counts characters: a quarter of vector_id_bytes_max, so that any string it allows fits."""
    return {"type": "string", "minLength": 0 if allow_empty else 1,
            "maxLength": limits.vector_id_bytes_max // 4, "pattern": VECTOR_ID_PATTERN,
            "description": f"a vector id: 1 to {limits.vector_id_bytes_max} bytes of UTF-8 "
                           "without control characters"
                           + (" (empty: none given)" if allow_empty else "")}


def bytes_json_schema(bytes_max: int, what: str) -> dict:
    """A string of at most `bytes_max` UTF-8 bytes, said the only way a JSON Schema can: at most
    a quarter as many characters."""
    return {"type": "string", "maxLength": bytes_max // 4,
            "description": f"{what}: at most {bytes_max} bytes of UTF-8"}
