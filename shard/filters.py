"""Metadata filters for shard search: parse, compile, and evaluate over whole columns.

Pure module: no I/O, no Deep Lake, no hnswlib. It turns a client's filter into an AST, checks it,
compiles it to numpy vector operations, and evaluates it over the columns of a shard (or over a
subset of rows, e.g. HNSW over-fetch candidates or a random sample).

Two input forms compile to the same AST:

* the seed's ``filters`` map (``SearchOptions.filters``, ``map<string, string>``): equality on every
  key, ANDed in the map's order (`filters_to_ast`). An empty map is "no filter" (None).
* an expression string (`parse_filter`), VecStore-style::

      category = 'tech' AND (year >= 2020 OR metadata.tier IN ('gold', "platinum"))
      NOT language = 'de' AND chunk_index < 3 AND flag != true

  Operators: ``= != < <= > >=``, ``IN (v, ...)``, ``NOT IN (v, ...)``, prefix ``NOT``, ``AND``,
  ``OR`` and parentheses. Precedence, loosest first: OR < AND < NOT < comparison, so
  ``NOT a = 1 AND b = 2 OR c = 3`` is ``((NOT (a = 1)) AND (b = 2)) OR (c = 3)``.
  Keywords (AND, OR, NOT, IN, TRUE, FALSE) are case-insensitive; field names are case-sensitive.
  Values: strings in single or double quotes with backslash escapes (``\\\\ \\' \\" \\n \\t \\r``),
  numbers (``42``, ``-3``, ``2.5``, ``-.5``, ``1e3``; ints stay ints), ``true`` / ``false``.
  A value always goes on the right: ``field op value``.

Field resolution (`Field`): a name is a dot-separated path of segments; a segment is a bare word
(``[^\\W\\d]\\w*``) or a backtick-quoted name (`` `source-type` ``, a backtick doubled inside).
``metadata.<rest>`` is the metadata key ``<rest>``; a single segment naming a standard field
(`STANDARD_FIELDS`) is that field; anything else is the metadata key spelled by the whole path.
So ``category``, ``metadata.category`` and ``{"category": ...}`` are the same field, and a
metadata key that collides with a standard field or a keyword is reached as ``metadata.id`` /
``metadata.and``.

Semantics (the oracle in tests/unit/test_filters.py re-implements exactly this):

* Standard text fields (id, document_id, chunk_id, content_type, language, model, content_hash)
  compare only with string literals; standard numeric fields (chunk_index, chunk_count,
  created_at_ms, updated_at_ms) only with number literals. A mismatch is an InvalidArgument.
* Metadata values are strings. A **string** literal compares as a string (code-point order for
  ``< <= > >=``). A **number** literal compares numerically (float64) when the stored string,
  stripped of surrounding whitespace, is a decimal number
  (``[+-]?(digits[.digits]|.digits)[e±N]``; not "nan", "inf" or "1_000"); otherwise the
  comparison is false. ``true`` / ``false`` match stored strings that are
  "true" / "false" in any case (after stripping); they only work with ``=``, ``!=`` and IN lists.
* NULL: a missing metadata key (or a None in a standard text column, NaN in a float one) is NULL.
  **Every comparison with NULL is false, including ``!=``**; the same holds for a value that cannot
  be compared with the literal (a non-numeric string vs. a number, a non-boolean vs. true).
  ``x IN (a, b)`` is ``x = a OR x = b``; ``x NOT IN (a, b)`` is ``x != a AND x != b``, so it is
  also false for NULL. Logic is two-valued: ``NOT`` simply negates, so ``NOT x = 'a'`` is **true**
  for a row without ``x`` while ``x != 'a'`` is false for it. (This is deliberately not SQL's
  three-valued logic, where NOT NULL stays NULL: "NOT (category = 'tech')" reading as "everything
  that is not tech, including untagged rows" is what users of a vector store expect.)

Evaluation is vectorized: `compile_filter` turns the AST into a small tree of closures, each of
which runs once per `CompiledFilter.mask` call over whole numpy columns (np.equal / np.isin on
object arrays, comparisons on float64 arrays). There is no per-row Python callback on the hot path;
the only per-row Python work is `MetadataColumns` extracting a key's column the first time it is
used (then cached and kept in sync across appends and deletes).

Errors: a bad filter from a client raises `tributary.errors.InvalidArgument` whose message names
the column (1-based character offset; "line L, column C" for multi-line input) and what was
expected. Misuse by the calling code (a view without a referenced column, rows of the wrong
length, an index out of range) raises `tributary.errors.Internal`.
"""

# Why a hand-written parser: the grammar is tiny (one precedence ladder, no arithmetic), and the
# error messages must name the exact column and the expected token, which generic tools make hard.
# No maintained small parsing library is available in the venv (lark, pyparsing, sqlglot are not
# installed and this module must not add dependencies); Python's own `ast` module parses Python,
# not this SQL-like syntax (`=` vs `==`, `NOT IN`, quoting rules), and it invites `eval`. A
# tokenizer plus recursive descent is a few hundred lines, needs nothing, and never evaluates input.

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Callable, Union

import numpy as np

from tributary.errors import Internal, InvalidArgument

filter_expression_bytes_max = 4096   # an expression (or a filters map's keys + values), UTF-8
filter_depth_max = 32                # AST depth (a comparison is 1); also nesting of ( and NOT
filter_in_values_max = 1024          # values in one IN / NOT IN list
filter_map_entries_max = 128         # entries in a filters map

TEXT_FIELDS = frozenset({"id", "document_id", "chunk_id", "content_type", "language", "model",
                         "content_hash"})
NUMERIC_FIELDS = frozenset({"chunk_index", "chunk_count", "created_at_ms", "updated_at_ms"})
STANDARD_FIELDS = TEXT_FIELDS | NUMERIC_FIELDS
COMPARISON_OPS = ("=", "!=", "<", "<=", ">", ">=")
KEYWORDS = frozenset({"AND", "OR", "NOT", "IN", "TRUE", "FALSE"})

__all__ = [
    "filter_expression_bytes_max", "filter_depth_max", "filter_in_values_max",
    "filter_map_entries_max", "STANDARD_FIELDS", "TEXT_FIELDS", "NUMERIC_FIELDS",
    "Field", "Compare", "InList", "Not", "And", "Or", "Node", "Literal",
    "parse_filter", "filters_to_ast", "build_filter_ast", "to_expression", "referenced_fields",
    "ast_depth", "compile_filter", "CompiledFilter", "MetadataColumns", "ColumnView",
    "estimate_selectivity",
]

# ---- AST -----------------------------------------------------------------------------------------

Literal = Union[str, int, float, bool]


@dataclass(frozen=True, slots=True)
class Field:
    """A resolved field: a standard column (`metadata=False`) or a metadata key."""

    name: str
    metadata: bool

    @property
    def path(self) -> str:
        """Canonical name: the standard field's name, or ``metadata.<key>``."""
        return f"metadata.{self.name}" if self.metadata else self.name

    @staticmethod
    def resolve(segments: tuple[str, ...] | str) -> "Field":
        """The field a name refers to (see the module docstring). A str is one whole key/name."""
        if isinstance(segments, str):
            segments = (segments,)
        if len(segments) > 1 and segments[0] == "metadata":
            return Field(".".join(segments[1:]), True)
        if len(segments) == 1 and segments[0] in STANDARD_FIELDS:
            return Field(segments[0], False)
        return Field(".".join(segments), True)


@dataclass(frozen=True, slots=True)
class Compare:
    """``field op value`` with op one of = != < <= > >=."""

    field: Field
    op: str
    value: Literal


@dataclass(frozen=True, slots=True)
class InList:
    """``field IN (values)`` or, when `negated`, ``field NOT IN (values)``."""

    field: Field
    values: tuple[Literal, ...]
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Not:
    operand: "Node"


@dataclass(frozen=True, slots=True)
class And:
    """All operands hold. ``And(())`` matches every row (the parser never produces it)."""

    operands: tuple["Node", ...]


@dataclass(frozen=True, slots=True)
class Or:
    """Any operand holds. ``Or(())`` matches no row (the parser never produces it)."""

    operands: tuple["Node", ...]


Node = Union[Compare, InList, Not, And, Or]


def _children(node: Node) -> tuple[Node, ...]:
    if isinstance(node, Not):
        return (node.operand,)
    if isinstance(node, (And, Or)):
        return node.operands
    return ()


def ast_depth(node: Node) -> int:
    """Depth of the tree: a comparison is 1; each NOT / AND / OR adds one level."""
    # Iterative so a hostile hand-built tree cannot exhaust the Python stack.
    best, todo = 0, [(node, 1)]
    while todo:
        cur, depth = todo.pop()
        best = max(best, depth)
        todo.extend((child, depth + 1) for child in _children(cur))
    return best


def referenced_fields(node: Node) -> set[str]:
    """Canonical paths (`Field.path`) of every field the filter reads."""
    out: set[str] = set()
    todo = [node]
    while todo:
        cur = todo.pop()
        if isinstance(cur, (Compare, InList)):
            out.add(cur.field.path)
        todo.extend(_children(cur))
    return out


# ---- tokenizer -----------------------------------------------------------------------------------

_SEGMENT_RE = re.compile(r"[^\W\d]\w*")
_NUMBER_RE = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_OPERATOR_CHARS = "=!<>"
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t", "r": "\r"}
_HINTS = {"&": " (use AND)", "|": " (use OR)", "==": " (use = for equality)",
          "<>": " (use != for inequality)", "!": " (use NOT or !=)"}


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str          # ident, string, number, keyword, op, lparen, rparen, comma, end
    value: Any         # ident: tuple of segments; keyword: upper-case word; op/literal: value
    pos: int           # 0-based character offset
    text: str          # the source text, for messages


class _Source:
    """The expression text plus error reporting by position."""

    def __init__(self, text: str):
        self.text = text

    def where(self, pos: int) -> str:
        if "\n" not in self.text:
            return f"column {pos + 1}"
        line = self.text.count("\n", 0, pos) + 1
        col = pos - (self.text.rfind("\n", 0, pos) + 1) + 1
        return f"line {line}, column {col}"

    def fail(self, pos: int, message: str) -> InvalidArgument:
        return InvalidArgument(f"invalid filter at {self.where(pos)}: {message}")


def _tokenize(src: _Source) -> list[_Token]:
    text, i, n = src.text, 0, len(src.text)
    out: list[_Token] = []
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "'\"":
            i = _read_string(src, i, out)
        elif _NUMBER_RE.match(text, i) or ch.isdigit():
            m = _NUMBER_RE.match(text, i)
            if m is None:   # e.g. a non-ASCII digit
                raise src.fail(i, f"malformed number starting with {text[i:i + 12]!r}")
            end = m.end()
            if end < n and (text[end].isalnum() or text[end] in "._`"):
                raise src.fail(i, f"malformed number {text[i:end + 1]!r}; expected a number "
                                  "such as 42, -3 or 2.5")
            out.append(_Token("number", _number_value(src, i, m.group()), i, m.group()))
            i = end
        elif ch == "`" or _SEGMENT_RE.match(text, i):
            i = _read_name(src, i, out)
        elif ch in _OPERATOR_CHARS:
            j = i
            while j < n and text[j] in _OPERATOR_CHARS:
                j += 1
            op = text[i:j]
            if op not in COMPARISON_OPS:
                raise src.fail(i, f"unknown operator {op!r}{_HINTS.get(op, '')}; expected one "
                                  "of =, !=, <, <=, >, >=, IN, NOT IN")
            out.append(_Token("op", op, i, op))
            i = j
        elif ch in "(),":
            kind = {"(": "lparen", ")": "rparen", ",": "comma"}[ch]
            out.append(_Token(kind, ch, i, ch))
            i += 1
        else:
            raise src.fail(i, f"unexpected character {ch!r}{_HINTS.get(ch, '')}")
    out.append(_Token("end", None, n, ""))
    return out


def _read_string(src: _Source, start: int, out: list[_Token]) -> int:
    text, quote, i, n = src.text, src.text[start], start + 1, len(src.text)
    parts: list[str] = []
    while i < n:
        ch = text[i]
        if ch == quote:
            out.append(_Token("string", "".join(parts), start, text[start:i + 1]))
            return i + 1
        if ch == "\\":
            if i + 1 >= n:
                break
            esc = text[i + 1]
            if esc not in _ESCAPES:
                raise src.fail(i, f"unknown escape '\\{esc}' in string; supported: "
                                  "\\\\ \\' \\\" \\n \\t \\r")
            parts.append(_ESCAPES[esc])
            i += 2
        else:
            parts.append(ch)
            i += 1
    raise src.fail(start, f"unterminated string literal; expected a closing {quote}")


def _read_name(src: _Source, start: int, out: list[_Token]) -> int:
    text, i, n = src.text, start, len(src.text)
    segments: list[str] = []
    quoted = False
    while True:
        if i < n and text[i] == "`":
            seg_start, i, chars = i, i + 1, []
            while True:
                if i >= n:
                    raise src.fail(seg_start, "unterminated quoted name; expected a closing `")
                if text[i] == "`":
                    if i + 1 < n and text[i + 1] == "`":
                        chars.append("`")
                        i += 2
                        continue
                    i += 1
                    break
                chars.append(text[i])
                i += 1
            if not chars:
                raise src.fail(seg_start, "empty quoted name ``")
            segments.append("".join(chars))
            quoted = True
        else:
            m = _SEGMENT_RE.match(text, i)
            if m is None:
                raise src.fail(i, "expected a name after '.'")
            segments.append(m.group())
            i = m.end()
        if i < n and text[i] == ".":
            i += 1
            continue
        break
    raw = text[start:i]
    if len(segments) == 1 and not quoted and segments[0].upper() in KEYWORDS:
        out.append(_Token("keyword", segments[0].upper(), start, raw))
    else:
        out.append(_Token("ident", tuple(segments), start, raw))
    return i


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _number_value(src: _Source, pos: int, raw: str) -> int | float:
    value: int | float = int(raw) if re.fullmatch(r"-?[0-9]+", raw) else float(raw)
    if not _finite(value):
        shown = raw if len(raw) <= 24 else raw[:21] + "..."
        raise src.fail(pos, f"number {shown} is out of range")
    return value


def _describe(tok: _Token) -> str:
    short = tok.text if len(tok.text) <= 24 else tok.text[:21] + "..."
    return {"end": "end of expression", "string": f"string {short}", "number": f"number {short}",
            "ident": f"name '{short}'", "keyword": f"keyword {tok.value}",
            "op": f"operator '{short}'"}.get(tok.kind, f"'{short}'")


# ---- parser --------------------------------------------------------------------------------------


class _Parser:
    """Recursive descent. Each parse method returns (node, depth of node)."""

    def __init__(self, src: _Source, tokens: list[_Token]):
        self.src, self.tokens, self.i = src, tokens, 0

    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def advance(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def at_keyword(self, word: str) -> bool:
        return self.tok.kind == "keyword" and self.tok.value == word

    def check_depth(self, depth: int, pos: int) -> None:
        if depth > filter_depth_max:
            raise self.src.fail(pos, f"filter nests deeper than {filter_depth_max} levels "
                                     "(AND / OR / NOT / parentheses)")

    def parse(self) -> Node:
        if self.tok.kind == "end":
            raise self.src.fail(0, "filter expression is empty; expected a comparison such as "
                                   "category = 'tech'")
        node, _ = self.parse_or(0)
        if self.tok.kind != "end":
            if self.tok.kind == "rparen":
                raise self.src.fail(self.tok.pos, "unmatched ')'")
            raise self.src.fail(self.tok.pos, f"unexpected {_describe(self.tok)} after a "
                                              "complete condition; expected AND, OR or the end "
                                              "of the expression")
        return node

    def parse_or(self, nesting: int) -> tuple[Node, int]:
        return self._chain("OR", Or, self.parse_and, nesting)

    def parse_and(self, nesting: int) -> tuple[Node, int]:
        return self._chain("AND", And, self.parse_not, nesting)

    def _chain(self, word, cls, operand, nesting) -> tuple[Node, int]:
        node, depth = operand(nesting)
        nodes, depths, first_op = [node], [depth], None
        while self.at_keyword(word):
            op_pos = self.advance().pos
            first_op = op_pos if first_op is None else first_op
            node, depth = operand(nesting)
            nodes.append(node)
            depths.append(depth)
        if len(nodes) == 1:
            return nodes[0], depths[0]
        depth = 1 + max(depths)
        self.check_depth(depth, first_op)
        return cls(tuple(nodes)), depth

    def parse_not(self, nesting: int) -> tuple[Node, int]:
        if self.at_keyword("NOT"):
            pos = self.advance().pos
            self.check_depth(nesting + 2, pos)      # this NOT plus at least a comparison below
            node, depth = self.parse_not(nesting + 1)
            self.check_depth(depth + 1, pos)
            return Not(node), depth + 1
        return self.parse_primary(nesting)

    def parse_primary(self, nesting: int) -> tuple[Node, int]:
        tok = self.tok
        if tok.kind == "lparen":
            self.advance()
            self.check_depth(nesting + 1, tok.pos)
            node, depth = self.parse_or(nesting + 1)
            if self.tok.kind != "rparen":
                raise self.src.fail(self.tok.pos, f"expected ')' to close the '(' at "
                                                  f"{self.src.where(tok.pos)}, found "
                                                  f"{_describe(self.tok)}")
            self.advance()
            return node, depth
        if tok.kind == "ident":
            return self.parse_comparison(), 1
        if tok.kind == "end":
            raise self.src.fail(tok.pos, "expected a condition (field op value) or '(', found "
                                         "end of expression")
        hint = ""
        if tok.kind in ("string", "number") or (tok.kind == "keyword" and
                                                 tok.value in ("TRUE", "FALSE")):
            hint = "; the field goes on the left: field op value"
        elif tok.kind == "keyword":
            hint = f"; to use a key named {tok.text!r} write metadata.{tok.text} or `{tok.text}`"
        raise self.src.fail(tok.pos, f"expected a field name, NOT or '(', found "
                                     f"{_describe(tok)}{hint}")

    def parse_comparison(self) -> Node:
        name_tok = self.advance()
        field = Field.resolve(name_tok.value)
        tok = self.tok
        if tok.kind == "op":
            self.advance()
            value, value_tok = self.parse_value(f"after '{tok.value}'")
            problem = _comparison_problem(field, tok.value, value)
            if problem:
                raise self.src.fail(value_tok.pos, problem)
            return Compare(field, tok.value, value)
        negated = False
        if self.at_keyword("NOT"):
            self.advance()
            if not self.at_keyword("IN"):
                raise self.src.fail(self.tok.pos, f"expected IN after NOT, found "
                                                  f"{_describe(self.tok)}")
            negated = True
        if self.at_keyword("IN"):
            return self.parse_in(field, negated)
        raise self.src.fail(tok.pos, f"expected a comparison operator (=, !=, <, <=, >, >=, IN, "
                                     f"NOT IN) after {name_tok.text!r}, found {_describe(tok)}")

    def parse_in(self, field: Field, negated: bool) -> Node:
        in_tok = self.advance()
        if self.tok.kind != "lparen":
            raise self.src.fail(self.tok.pos, f"expected '(' after IN, found "
                                              f"{_describe(self.tok)}")
        open_tok = self.advance()
        if self.tok.kind == "rparen":
            raise self.src.fail(open_tok.pos, "empty IN list; expected at least one value")
        values: list[Literal] = []
        while True:
            value, value_tok = self.parse_value("in the IN list")
            if len(values) >= filter_in_values_max:
                raise self.src.fail(value_tok.pos, f"IN list has more than "
                                                   f"{filter_in_values_max} values")
            problem = _comparison_problem(field, "=", value)
            if problem:
                raise self.src.fail(value_tok.pos, problem)
            values.append(value)
            if self.tok.kind == "comma":
                self.advance()
                continue
            if self.tok.kind == "rparen":
                self.advance()
                return InList(field, tuple(values), negated)
            raise self.src.fail(self.tok.pos, f"expected ',' or ')' in the IN list at "
                                              f"{self.src.where(in_tok.pos)}, found "
                                              f"{_describe(self.tok)}")

    def parse_value(self, context: str) -> tuple[Literal, _Token]:
        tok = self.tok
        if tok.kind in ("string", "number"):
            self.advance()
            return tok.value, tok
        if tok.kind == "keyword" and tok.value in ("TRUE", "FALSE"):
            self.advance()
            return tok.value == "TRUE", tok
        hint = ""
        if tok.kind == "ident":
            hint = f"; quote string values, e.g. '{tok.text}'"
        raise self.src.fail(tok.pos, f"expected a value (a quoted string, a number, true or "
                                     f"false) {context}, found {_describe(tok)}{hint}")


def _literal_kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _comparison_problem(field: Field, op: str, value: Any) -> str | None:
    """Why `field op value` is not allowed, or None."""
    kind = _literal_kind(value)
    if kind is None:
        return f"unsupported value {value!r}; expected a string, a number, true or false"
    if kind == "number" and not _finite(value):
        return f"number {value!r} is not finite"
    if field.metadata:
        if kind == "boolean" and op not in ("=", "!="):
            return f"true/false can only be compared with = or != (or IN), not {op}"
        return None
    if field.name in TEXT_FIELDS and kind != "string":
        return (f"field '{field.name}' holds text; compare it with a quoted string, "
                f"not a {kind}")
    if field.name in NUMERIC_FIELDS and kind != "number":
        return f"field '{field.name}' holds numbers; compare it with a number, not a {kind}"
    return None


def parse_filter(expression: str) -> Node:
    """Parses a filter expression into an AST. Raises InvalidArgument with the column on error."""
    if not isinstance(expression, str):
        raise InvalidArgument(f"filter expression must be a string, got "
                              f"{type(expression).__name__}")
    size = len(expression.encode("utf-8"))
    if size > filter_expression_bytes_max:
        raise InvalidArgument(f"filter expression is {size} bytes; the limit is "
                              f"{filter_expression_bytes_max}")
    src = _Source(expression)
    return _Parser(src, _tokenize(src)).parse()


def _map_value(field: Field, key: str, value: str) -> Literal:
    if field.metadata or field.name in TEXT_FIELDS:
        return value
    raw = value.strip()
    if _NUMBER_RE.fullmatch(raw):
        number = int(raw) if re.fullmatch(r"-?[0-9]+", raw) else float(raw)
        if _finite(number):
            return number
    raise InvalidArgument(f"filters[{key!r}]: field '{field.name}' holds numbers; expected a "
                          f"number such as 3, got {value!r}")


def filters_to_ast(filters: Mapping[str, str] | None) -> Node | None:
    """The seed's filters map as an AST: ``key = value`` for every entry, ANDed in map order.

    A key resolves like a name in an expression but is taken whole (it may contain any character):
    a standard field name, ``metadata.<key>``, or else a metadata key. Values are strings; for a
    standard numeric field the string must be a number. An empty or None map returns None (no
    filter); one entry returns a bare Compare, so ``{"a": "x"}`` equals ``parse_filter("a = 'x'")``.
    """
    if filters is None:
        return None
    if not isinstance(filters, Mapping):
        raise InvalidArgument(f"filters must be a map of strings, got {type(filters).__name__}")
    if len(filters) > filter_map_entries_max:
        raise InvalidArgument(f"filters has {len(filters)} entries; the limit is "
                              f"{filter_map_entries_max}")
    size = 0
    nodes: list[Node] = []
    for key, value in filters.items():
        if not isinstance(key, str) or not key:
            raise InvalidArgument(f"filters keys must be non-empty strings, got {key!r}")
        if not isinstance(value, str):
            raise InvalidArgument(f"filters[{key!r}] must be a string, got "
                                  f"{type(value).__name__}")
        size += len(key.encode("utf-8")) + len(value.encode("utf-8"))
        if key.startswith("metadata.") and len(key) > len("metadata."):
            field = Field(key[len("metadata."):], True)
        else:
            field = Field.resolve(key)
        nodes.append(Compare(field, "=", _map_value(field, key, value)))
    if size > filter_expression_bytes_max:
        raise InvalidArgument(f"filters map is {size} bytes; the limit is "
                              f"{filter_expression_bytes_max}")
    if not nodes:
        return None
    return nodes[0] if len(nodes) == 1 else And(tuple(nodes))


def build_filter_ast(filters: Mapping[str, str] | None = None,
                     expression: str | None = None) -> Node | None:
    """Both request forms together (ANDed, map first); None when neither filters anything.
    An empty or None `expression` means "no expression" (parse_filter("") itself is an error)."""
    parts = [n for n in (filters_to_ast(filters),
                         parse_filter(expression) if expression else None) if n is not None]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else And(tuple(parts))


# ---- unparse -------------------------------------------------------------------------------------

_BARE_PATH_RE = re.compile(r"[^\W\d]\w*(?:\.[^\W\d]\w*)*")


def _format_field(field: Field) -> str:
    if not field.metadata:
        return field.name
    key = field.name
    segments = key.split(".")
    bare = _BARE_PATH_RE.fullmatch(key) is not None
    if bare and segments[0] != "metadata" and key not in STANDARD_FIELDS and not (
            len(segments) == 1 and key.upper() in KEYWORDS):
        return key
    if bare:
        return f"metadata.{key}"
    return "metadata.`" + key.replace("`", "``") + "`"


def _format_literal(value: Literal) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    escaped = (value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
               .replace("\r", "\\r").replace("\t", "\\t"))
    return f"'{escaped}'"


def to_expression(node: Node) -> str:
    """An expression that `parse_filter` turns back into an equal AST (for logs and tests)."""
    if isinstance(node, (Compare, InList, Not, And, Or)) and ast_depth(node) > filter_depth_max:
        raise InvalidArgument(f"filter nests deeper than {filter_depth_max} levels")
    return _format(node)


def _format(node: Node) -> str:
    if isinstance(node, Compare):
        return f"{_format_field(node.field)} {node.op} {_format_literal(node.value)}"
    if isinstance(node, InList):
        values = ", ".join(_format_literal(v) for v in node.values)
        return f"{_format_field(node.field)} {'NOT IN' if node.negated else 'IN'} ({values})"
    if isinstance(node, Not):
        inner = _format(node.operand)
        return f"NOT ({inner})" if isinstance(node.operand, (And, Or)) else f"NOT {inner}"
    if isinstance(node, (And, Or)):
        if len(node.operands) < 2:
            raise InvalidArgument(f"{type(node).__name__} with {len(node.operands)} operands has "
                                  "no expression form")
        word = " AND " if isinstance(node, And) else " OR "
        parts = []
        for child in node.operands:
            text = _format(child)
            # Parenthesize looser children and same-kind children (keeps the tree's shape).
            wrap = isinstance(child, (Or, type(node)))
            parts.append(f"({text})" if wrap else text)
        return word.join(parts)
    raise InvalidArgument(f"not a filter node: {node!r}")


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
    nums = [v for v in node.values if _literal_kind(v) == "number"]
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


def _validate(node: Any) -> None:
    depth = ast_depth(node) if isinstance(node, (Compare, InList, Not, And, Or)) else 0
    if depth > filter_depth_max:
        raise InvalidArgument(f"filter nests {depth} levels deep; the limit is "
                              f"{filter_depth_max}")
    todo = [node]
    while todo:
        cur = todo.pop()
        if isinstance(cur, (Compare, InList)):
            if not isinstance(cur.field, Field) or not cur.field.name or (
                    not cur.field.metadata and cur.field.name not in STANDARD_FIELDS):
                raise InvalidArgument(f"bad field in filter: {cur.field!r}")
            if isinstance(cur, Compare):
                if cur.op not in _UFUNCS:
                    raise InvalidArgument(f"unknown operator {cur.op!r}; expected one of "
                                          "=, !=, <, <=, >, >=")
                values, op = (cur.value,), cur.op
            else:
                values, op = tuple(cur.values), "="
                if not values:
                    raise InvalidArgument(f"empty IN list for '{cur.field.path}'")
                if len(values) > filter_in_values_max:
                    raise InvalidArgument(f"IN list for '{cur.field.path}' has {len(values)} "
                                          f"values; the limit is {filter_in_values_max}")
            for value in values:
                problem = _comparison_problem(cur.field, op, value)
                if problem:
                    raise InvalidArgument(f"filter on '{cur.field.path}': {problem}")
        elif isinstance(cur, (Not, And, Or)):
            todo.extend(_children(cur))
        else:
            raise InvalidArgument(f"not a filter node: {cur!r}")


class CompiledFilter:
    """A checked filter, ready to evaluate over a `ColumnView`."""

    def __init__(self, ast: Node):
        _validate(ast)
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
