"""The filter language of shard search: parse a client's filter into a checked AST.

Pure module: no I/O, no numpy. The router uses it to refuse a bad filter before any shard is
asked; nodes compile its AST with shard/filter_eval.py, which evaluates it over whole columns
(the semantics below are what that evaluator implements).

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

Errors: a bad filter from a client raises `tributary.errors.InvalidArgument` whose message names
the column (1-based character offset; "line L, column C" for multi-line input) and what was
expected.
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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

from tributary.errors import InvalidArgument

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
    "ast_depth", "check_ast", "literal_kind",
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


def literal_kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _comparison_problem(field: Field, op: str, value: Any) -> str | None:
    """Why `field op value` is not allowed, or None."""
    kind = literal_kind(value)
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


def check_ast(node: Any) -> None:
    """Checks an AST built by hand or by this module: field and literal types, operators and
    limits. Raises InvalidArgument (without a position: a parsed AST already passed the same
    checks with positions)."""
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
                if cur.op not in COMPARISON_OPS:
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
