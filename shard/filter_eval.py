"""Evaluation of parsed filters over a shard's columns (nodes only; the router parses with
shard/filter_parse.py and never evaluates).

`compile_filter` turns a checked AST into a small tree of closures, each of which runs once per
`CompiledFilter.mask` call over whole numpy columns (np.equal / np.isin on object arrays,
comparisons on float64 arrays). There is no per-row Python callback on the hot path; the only
per-row Python work is `MetadataColumns` extracting a key's column the first time it is used
(then cached and kept in sync across appends and deletes). The semantics (NULLs, metadata
numbers and booleans, two-valued NOT) are those set out in shard/filter_parse.py; the oracle in
tests/unit/test_filters.py re-implements them.

Misuse by the calling code (a view without a referenced column, rows of the wrong length, an
index out of range) raises `tributary.errors.Internal`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, Callable, Union

import numpy as np

from shard.filter_parse import (NUMERIC_FIELDS, STANDARD_FIELDS, TEXT_FIELDS, And, Compare,
                                InList, Node, Not, check_ast, literal_kind, referenced_fields)
from tributary.errors import Internal

__all__ = ["compile_filter", "CompiledFilter", "MetadataColumns", "ColumnView",
           "estimate_selectivity"]


# ---- metadata columns ----------------------------------------------------------------------------

_STORED_NUMBER_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _stored_number(value: str | None) -> float:
    if value is None:
        return math.nan
    text = value.strip()
    return float(text) if _STORED_NUMBER_RE.fullmatch(text) else math.nan


def _stored_boolean(value: str | None) -> int:
    if value is None:
        return -1
    text = value.strip().lower()
    return 1 if text == "true" else 0 if text == "false" else -1


def _parse_column(strings: np.ndarray, parse: Callable[[str | None], Any],
                  dtype: type) -> np.ndarray:
    """`parse` applied to every entry, calling it once per distinct value (metadata columns are
    highly repetitive: years, categories, flags), the rest is a C-level dict lookup per row."""
    values = strings.tolist()
    table = {v: parse(v) for v in dict.fromkeys(values)}
    return np.fromiter(map(table.__getitem__, values), dtype=dtype, count=len(values))


def _clean_row(row: Mapping[str, Any] | None) -> dict[str, str]:
    if not row:
        return {}
    return {str(k): v if type(v) is str else str(v) for k, v in row.items() if v is not None}


def _frozen(arr: np.ndarray) -> np.ndarray:
    arr.flags.writeable = False
    return arr


class _KeyArrays:
    """The columns of one metadata key, each built on first use."""

    KINDS = ("strings", "present", "filled", "numbers", "booleans")

    def __init__(self, key: str):
        self.key = key
        self.arrays: dict[str, np.ndarray] = {}

    def get(self, kind: str, rows: list[dict[str, str]]) -> np.ndarray:
        arr = self.arrays.get(kind)
        if arr is None:
            arr = self.arrays[kind] = _frozen(self._build(kind, rows))
        return arr

    def _build(self, kind: str, rows: list[dict[str, str]]) -> np.ndarray:
        if kind == "strings":
            out = np.empty(len(rows), dtype=object)
            key = self.key
            out[:] = [r.get(key) for r in rows]
            return out
        strings = self.get("strings", rows)
        if kind == "present":
            return np.not_equal(strings, None).astype(bool)
        if kind == "filled":
            filled = np.where(self.get("present", rows), strings, "")
            return filled.astype(object, copy=False)
        if kind == "numbers":
            return _parse_column(strings, _stored_number, np.float64)
        if kind == "booleans":
            return _parse_column(strings, _stored_boolean, np.int8)
        raise Internal(f"unknown metadata column kind {kind!r}")

    def extend(self, new_rows: list[dict[str, str]]) -> None:
        fresh = _KeyArrays(self.key)
        for kind in self.KINDS:
            if kind in self.arrays:
                self.arrays[kind] = _frozen(np.concatenate(
                    [self.arrays[kind], fresh.get(kind, new_rows)]))

    def keep(self, mask: np.ndarray) -> None:
        for kind, arr in self.arrays.items():
            self.arrays[kind] = _frozen(arr[mask])


class MetadataColumns:
    """Per-row metadata dicts, with per-key numpy columns extracted once and cached.

    Built from one mapping per row (None or {} for a row without metadata). Values are stored as
    strings (non-strings are converted with str(); None values are dropped, i.e. missing). For a
    key the class serves, all of length ``len(self)`` and read-only:

    * `strings(key)`: object array of the stored strings, None where the key is missing;
    * `present(key)`: bool array, True where the key is set;
    * `numbers(key)`: float64 array, NaN where missing or not a decimal number;
    * `booleans(key)`: int8 array, 1 for "true", 0 for "false" (any case), -1 otherwise.

    Each column is built on first use with one pass over the rows and then cached. `append` and
    `delete` keep cached columns in sync incrementally (only new rows are parsed; deletion masks
    the arrays), so a shard can hold one instance across writes. Not thread-safe: the owner
    (the replica, under its lock) serializes mutation and evaluation.
    """

    def __init__(self, rows: Iterable[Mapping[str, Any] | None] = ()):
        self._rows: list[dict[str, str]] = [_clean_row(r) for r in rows]
        self._keys: dict[str, _KeyArrays] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def row(self, index: int) -> dict[str, str]:
        """A copy of one row's metadata."""
        return dict(self._rows[index])

    def cached_keys(self) -> set[str]:
        return set(self._keys)

    def append(self, rows: Iterable[Mapping[str, Any] | None]) -> None:
        """Adds rows at the end (the shard's Deep Lake append order)."""
        new = [_clean_row(r) for r in rows]
        if not new:
            return
        self._rows.extend(new)
        for arrays in self._keys.values():
            arrays.extend(new)

    def delete(self, indices: Iterable[int] | np.ndarray) -> None:
        """Removes rows by their current index, all at once; later rows shift down (as in Deep
        Lake). Duplicates are allowed; an index outside [0, len) raises Internal."""
        idx = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices)
        if idx.size == 0:
            return
        if idx.dtype.kind not in "iu":
            raise Internal(f"row indices must be integers, got dtype {idx.dtype}")
        idx = idx.ravel()
        n = len(self._rows)
        if idx.min() < 0 or idx.max() >= n:
            raise Internal(f"row index out of range for {n} metadata rows")
        keep = np.ones(n, dtype=bool)
        keep[idx] = False
        self._rows = [r for r, k in zip(self._rows, keep.tolist()) if k]
        for arrays in self._keys.values():
            arrays.keep(keep)

    def invalidate(self, key: str | None = None) -> None:
        """Drops cached columns (one key, or all); they are rebuilt on next use."""
        if key is None:
            self._keys.clear()
        else:
            self._keys.pop(key, None)

    def _get(self, key: str, kind: str) -> np.ndarray:
        arrays = self._keys.get(key)
        if arrays is None:
            arrays = self._keys[key] = _KeyArrays(key)
        return arrays.get(kind, self._rows)

    def strings(self, key: str) -> np.ndarray:
        return self._get(key, "strings")

    def present(self, key: str) -> np.ndarray:
        return self._get(key, "present")

    def numbers(self, key: str) -> np.ndarray:
        return self._get(key, "numbers")

    def booleans(self, key: str) -> np.ndarray:
        return self._get(key, "booleans")

    def filled_strings(self, key: str) -> np.ndarray:
        """Like `strings`, with "" instead of None (safe for ordering and np.isin)."""
        return self._get(key, "filled")


# ---- column view ---------------------------------------------------------------------------------


class ColumnView:
    """Whole columns of one shard, as the compiled filter reads them.

    `standard` maps standard field names to arrays of ``num_rows`` entries: text fields as object
    (or unicode) arrays of str (None = NULL), numeric fields as integer or float arrays (NaN =
    NULL). Only the fields a filter references need to be present. `metadata` holds the rows'
    metadata. A view is a snapshot: it caches normalized text columns, so build a new view after
    the standard arrays change (cheap); the MetadataColumns may be shared and mutated, but its
    length must match `num_rows` whenever the view is evaluated.
    """

    def __init__(self, standard: Mapping[str, Any] | None = None,
                 metadata: MetadataColumns | None = None, num_rows: int | None = None):
        self._standard: dict[str, np.ndarray] = {}
        lengths = set()
        for name, values in (standard or {}).items():
            if name not in STANDARD_FIELDS:
                raise Internal(f"'{name}' is not a standard field")
            if name in TEXT_FIELDS:
                arr = values if isinstance(values, np.ndarray) else _object_array(values)
                if arr.dtype.kind not in "OUT":
                    raise Internal(f"standard text column '{name}' has dtype {arr.dtype}")
            else:
                arr = np.asarray(values)
                if arr.dtype.kind not in "iuf":
                    raise Internal(f"standard numeric column '{name}' has dtype {arr.dtype}")
            if arr.ndim != 1:
                raise Internal(f"standard column '{name}' must be one-dimensional")
            self._standard[name] = arr
            lengths.add(len(arr))
        if metadata is not None:
            lengths.add(len(metadata))
        if num_rows is not None:
            lengths.add(num_rows)
        if len(lengths) > 1:
            raise Internal(f"columns disagree on the row count: {sorted(lengths)}")
        self.num_rows = lengths.pop() if lengths else 0
        self.metadata = metadata if metadata is not None else MetadataColumns(
            [None] * self.num_rows)
        self._text_cache: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}

    def __len__(self) -> int:
        return self.num_rows

    @classmethod
    def from_records(cls, records: Iterable[Any]) -> "ColumnView":
        """A view over records with the VectorRecord attributes (or mappings with those keys)."""
        records = list(records)

        def get(rec, name, default):
            if isinstance(rec, Mapping):
                return rec.get(name, default)
            return getattr(rec, name, default)

        standard: dict[str, Any] = {}
        for name in TEXT_FIELDS:
            standard[name] = _object_array([get(r, name, "") for r in records])
        for name in NUMERIC_FIELDS:
            standard[name] = np.asarray([get(r, name, 0) for r in records], dtype=np.int64)
        metadata = MetadataColumns(get(r, "metadata", None) for r in records)
        return cls(standard, metadata, len(records))

    def check(self) -> None:
        if len(self.metadata) != self.num_rows:
            raise Internal(f"view is stale: {self.num_rows} rows but the metadata holds "
                           f"{len(self.metadata)}")

    def _column(self, name: str) -> np.ndarray:
        arr = self._standard.get(name)
        if arr is None:
            raise Internal(f"the column view has no '{name}' column")
        return arr

    def text(self, name: str, rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """(values with "" for NULL, present mask or None if nothing is NULL), at `rows`."""
        cached = self._text_cache.get(name)
        if cached is None:
            arr = self._column(name)
            if arr.dtype.kind == "O":
                present = np.not_equal(arr, None).astype(bool)
                if present.all():
                    cached = (arr, None)
                else:
                    cached = (np.where(present, arr, "").astype(object, copy=False), present)
            else:
                cached = (arr, None)
            self._text_cache[name] = cached
        values, present = cached
        if rows is None:
            return values, present
        return values[rows], None if present is None else present[rows]

    def numeric(self, name: str, rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        arr = self._column(name)
        if rows is not None:
            arr = arr[rows]
        present = ~np.isnan(arr) if arr.dtype.kind == "f" else None
        return arr, present

    def meta(self, key: str, kind: str, rows: np.ndarray | None) -> np.ndarray:
        arr = self.metadata._get(key, kind)
        return arr if rows is None else arr[rows]


def _object_array(values: Iterable[Any]) -> np.ndarray:
    values = list(values)
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


# ---- compile -------------------------------------------------------------------------------------

_Eval = Callable[[ColumnView, Union[np.ndarray, None]], np.ndarray]
_UFUNCS = {"=": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal,
           ">": np.greater, ">=": np.greater_equal}


def _with_present(result: np.ndarray, present: np.ndarray | None) -> np.ndarray:
    result = np.asarray(result, dtype=bool)
    return result if present is None else result & present


def _compile_compare(node: Compare) -> _Eval:
    field, op, value = node.field, node.op, node.value
    ufunc = _UFUNCS[op]
    name = field.name
    if field.metadata:
        if isinstance(value, bool):
            want = np.int8(1 if value else 0) if op == "=" else np.int8(0 if value else 1)
            return lambda view, rows: view.meta(name, "booleans", rows) == want
        if isinstance(value, (int, float)):
            x = float(value)
            if op == "!=":
                def ne(view, rows):
                    nums = view.meta(name, "numbers", rows)
                    return (nums != x) & ~np.isnan(nums)
                return ne
            return lambda view, rows: ufunc(view.meta(name, "numbers", rows), x)

        def meta_text(view, rows):
            filled = view.meta(name, "filled", rows)
            return _with_present(ufunc(filled, value), view.meta(name, "present", rows))
        return meta_text
    if name in TEXT_FIELDS:
        def std_text(view, rows):
            values, present = view.text(name, rows)
            return _with_present(ufunc(values, value), present)
        return std_text

    def std_number(view, rows):
        values, present = view.numeric(name, rows)
        return _with_present(ufunc(values, value), present)
    return std_number


def _int_column_values(values: list[int | float]) -> np.ndarray:
    """The literals that can equal an int64 value, as int64 (others can never match)."""
    lo, hi = -(2 ** 63), 2 ** 63 - 1
    out = []
    for v in values:
        if isinstance(v, float):
            if not v.is_integer():
                continue
            v = int(v)
        if lo <= v <= hi:
            out.append(v)
    return np.asarray(out, dtype=np.int64)


def _compile_in(node: InList) -> _Eval:
    field, negated, name = node.field, node.negated, node.field.name
    strs = [v for v in node.values if isinstance(v, str)]
    nums = [v for v in node.values if literal_kind(v) == "number"]
    bools = [v for v in node.values if isinstance(v, bool)]
    strs_arr = _object_array(dict.fromkeys(strs))
    nums_f = np.asarray([float(v) for v in nums], dtype=np.float64)
    codes = np.asarray(sorted({1 if b else 0 for b in bools}), dtype=np.int8)

    # IN is the OR of `=` over the values; NOT IN the AND of `!=`. Each part below is the exact
    # vector form of that, with NULL / incomparable rows false in both.
    def combine(parts: list[np.ndarray], n: int) -> np.ndarray:
        if not parts:
            return np.zeros(n, dtype=bool)
        out = parts[0]
        for p in parts[1:]:
            out = (out & p) if negated else (out | p)
        return out

    if field.metadata:
        def meta_in(view, rows):
            parts = []
            if strs:
                present = view.meta(name, "present", rows)
                hit = np.isin(view.meta(name, "filled", rows), strs_arr)
                parts.append(present & (~hit if negated else hit))
            if nums:
                col = view.meta(name, "numbers", rows)
                hit = np.isin(col, nums_f)
                parts.append(~np.isnan(col) & ~hit if negated else hit)
            if bools:
                col = view.meta(name, "booleans", rows)
                hit = np.isin(col, codes)
                parts.append((col >= 0) & ~hit if negated else hit)
            return combine(parts, view.num_rows if rows is None else len(rows))
        return meta_in
    if name in TEXT_FIELDS:
        def std_text_in(view, rows):
            values, present = view.text(name, rows)
            hit = np.isin(values, strs_arr)
            return _with_present(~hit if negated else hit, present)
        return std_text_in

    def std_number_in(view, rows):
        values, present = view.numeric(name, rows)
        wanted = _int_column_values(nums) if values.dtype.kind in "iu" else nums_f
        hit = np.isin(values, wanted)
        return _with_present(~hit if negated else hit, present)
    return std_number_in


def _compile(node: Node) -> _Eval:
    if isinstance(node, Compare):
        return _compile_compare(node)
    if isinstance(node, InList):
        return _compile_in(node)
    if isinstance(node, Not):
        inner = _compile(node.operand)
        return lambda view, rows: ~inner(view, rows)
    parts = [_compile(child) for child in node.operands]
    if isinstance(node, And):
        def all_of(view, rows):
            out = np.ones(view.num_rows if rows is None else len(rows), dtype=bool)
            for part in parts:
                out &= part(view, rows)
                if not out.any():
                    break
            return out
        return all_of

    def any_of(view, rows):
        out = np.zeros(view.num_rows if rows is None else len(rows), dtype=bool)
        for part in parts:
            out |= part(view, rows)
            if out.all():
                break
        return out
    return any_of




class CompiledFilter:
    """A checked filter, ready to evaluate over a `ColumnView`."""

    def __init__(self, ast: Node):
        check_ast(ast)
        self.ast = ast
        self.fields: frozenset[str] = frozenset(referenced_fields(ast))
        self._eval = _compile(ast)

    def mask(self, columns: ColumnView, rows: np.ndarray | None = None) -> np.ndarray:
        """Bool array: which rows match. Over all rows, or only over `rows` (an integer index
        array, e.g. HNSW candidates or a sample), in which case entry i is about ``rows[i]``."""
        columns.check()
        if rows is not None:
            rows = np.asarray(rows)
            if rows.size and rows.dtype.kind not in "iu":
                raise Internal(f"rows must be integer indices, got dtype {rows.dtype}")
            rows = rows.astype(np.intp, copy=False)
            if rows.ndim != 1:
                raise Internal("rows must be a one-dimensional index array")
            if rows.size and (rows.min() < 0 or rows.max() >= columns.num_rows):
                raise Internal(f"row index out of range for {columns.num_rows} rows")
        out = self._eval(columns, rows)
        return np.asarray(out, dtype=bool)

    def __repr__(self) -> str:
        return f"CompiledFilter({self.ast!r})"


def compile_filter(ast: Node) -> CompiledFilter:
    """Checks `ast` (field/literal types, limits; InvalidArgument without a position, since a
    parsed AST has already passed the same checks with positions) and compiles it."""
    return CompiledFilter(ast)


def estimate_selectivity(compiled: CompiledFilter, columns: ColumnView, sample_size: int = 1000,
                         rng: np.random.Generator | int | None = None) -> float:
    """Fraction of rows that match, estimated on a uniform sample of `sample_size` rows drawn
    without replacement (exact when the view has at most `sample_size` rows; 0.0 when empty).

    Standard error is about sqrt(p(1-p)/sample_size), i.e. <= 0.016 for 1000 samples. Metadata
    columns a filter reads are built for all rows on first use (and cached), not just the sample.
    """
    n = columns.num_rows
    if n == 0:
        return 0.0
    if sample_size <= 0:
        raise Internal("sample_size must be positive")
    if n <= sample_size:
        return float(compiled.mask(columns).mean())
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    rows = np.sort(gen.choice(n, size=sample_size, replace=False))
    return float(compiled.mask(columns, rows).mean())
