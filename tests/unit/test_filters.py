"""Specification of shard/filter_parse.py and shard/filter_eval.py: the filter language, its
NULL semantics, and the vectorized evaluator, checked against a plain per-row Python interpreter
(the oracle below)."""

from __future__ import annotations

import operator
import re
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shard import filter_parse as F
from shard.filter_eval import ColumnView, MetadataColumns, compile_filter, estimate_selectivity
from shard.filter_parse import (And, Compare, Field, InList, Not, Or, build_filter_ast,
                                filters_to_ast, parse_filter, referenced_fields, to_expression)
from tributary.errors import Internal, InvalidArgument


def meta(name: str) -> Field:
    return Field(name, True)


def std(name: str) -> Field:
    return Field(name, False)


def mask_of(expression: str, rows: list[dict]) -> list[bool]:
    return compile_filter(parse_filter(expression)).mask(ColumnView.from_records(rows)).tolist()


# ---- the oracle: one row at a time, straight from the spec ---------------------------------------

_ORACLE_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_ORACLE_OPS = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
               ">": operator.gt, ">=": operator.ge}


def oracle_number(text):
    text = text.strip()
    return float(text) if _ORACLE_NUMBER.fullmatch(text) else None


def oracle_boolean(text):
    return {"true": True, "false": False}.get(text.strip().lower())


def oracle_compare(row, field, op, literal):
    value = row["metadata"].get(field.name) if field.metadata else row[field.name]
    if value is None:                        # NULL: every comparison is false, even !=
        return False
    if isinstance(literal, bool):
        flag = oracle_boolean(value)
        return flag is not None and _ORACLE_OPS[op](flag, literal)
    if isinstance(literal, (int, float)) and field.metadata:
        number = oracle_number(value)
        return number is not None and _ORACLE_OPS[op](number, float(literal))
    return _ORACLE_OPS[op](value, literal)


def oracle(node, row) -> bool:
    if isinstance(node, Compare):
        return oracle_compare(row, node.field, node.op, node.value)
    if isinstance(node, InList):
        if node.negated:
            return all(oracle_compare(row, node.field, "!=", v) for v in node.values)
        return any(oracle_compare(row, node.field, "=", v) for v in node.values)
    if isinstance(node, Not):
        return not oracle(node.operand, row)
    if isinstance(node, And):
        return all(oracle(child, row) for child in node.operands)
    if isinstance(node, Or):
        return any(oracle(child, row) for child in node.operands)
    raise AssertionError(node)


# ---- generators ----------------------------------------------------------------------------------

STORED = ["1", "2", "2.0", " 3 ", "-1", "1e1", "10", ".5", "x", "tech", "Tech", "", "true",
          "FALSE", "True ", "yes", "nan", "inf", "1_0", "b", "a'b"]
META_KEYS = ["a", "b", "c"]
TEXTS = ["en", "de", "", "v1", "v2", "w", "tech", "x", "a'b", "b"]
FLOATS = [0.0, -1.0, 2.0, 2.5, 10.0, 0.5, -0.5]

stored_values = st.sampled_from(STORED)
rows_strategy = st.lists(st.fixed_dictionaries({
    "id": st.sampled_from(["v1", "v2", "w"]),
    "language": st.sampled_from(["en", "de", ""]),
    "chunk_index": st.integers(-2, 5),
    "metadata": st.dictionaries(st.sampled_from(META_KEYS), stored_values, max_size=3),
}), min_size=3, max_size=25)
# A fixed table where every stored value (and "missing") shows up under every key, so that almost
# any generated filter splits it; hypothesis' own rows add small, shrinkable cases.
_CHOICES = STORED + [None]
DIVERSE_ROWS = [{
    "id": ["v1", "v2", "w"][i % 3], "language": ["en", "de", ""][i % 3 - 1],
    "chunk_index": i % 8 - 2,
    "metadata": {k: v for k, v in zip(META_KEYS, (_CHOICES[i % len(_CHOICES)],
                                                  _CHOICES[(i * 5 + 1) % len(_CHOICES)],
                                                  _CHOICES[(i * 7 + 3) % len(_CHOICES)]))
                 if v is not None},
} for i in range(3 * len(_CHOICES))]

FIELDS = [meta("a"), meta("b"), meta("c"), std("id"), std("language"), std("chunk_index")]
NUMBERS = st.integers(-3, 12) | st.sampled_from(FLOATS)
META_ORDERED = st.sampled_from(STORED + ["zz", "tech2"]) | NUMBERS     # literals for < <= > >=
META_EQUAL = META_ORDERED | st.booleans()                    # literals for = != IN


def leaves_for(field: Field):
    if field.metadata:
        equal, ordered = META_EQUAL, META_ORDERED
    elif field.name in F.NUMERIC_FIELDS:
        equal = ordered = NUMBERS
    else:
        equal = ordered = st.sampled_from(TEXTS)
    return (st.builds(Compare, st.just(field), st.sampled_from(["=", "!="]), equal)
            | st.builds(Compare, st.just(field), st.sampled_from(["<", "<=", ">", ">="]), ordered)
            | st.builds(InList, st.just(field), st.lists(equal, min_size=1, max_size=4).map(tuple),
                        st.booleans()))


def _branches(children):
    operands = st.lists(children, min_size=2, max_size=3).map(tuple)
    return st.builds(Not, children) | operands.map(And) | operands.map(Or)


trees = st.recursive(st.one_of([leaves_for(f) for f in FIELDS]), _branches, max_leaves=10)


# ---- parsing -------------------------------------------------------------------------------------


def test_a_simple_conjunction_parses_to_two_metadata_comparisons():
    assert parse_filter("category = 'tech' AND year >= 2020") == And((
        Compare(meta("category"), "=", "tech"), Compare(meta("year"), ">=", 2020)))


def test_precedence_is_or_then_and_then_not_then_comparison():
    a, b, c = (Compare(meta(k), "=", 1) for k in "abc")
    assert parse_filter("a = 1 OR b = 2 AND c = 3") == Or((
        a, And((Compare(meta("b"), "=", 2), Compare(meta("c"), "=", 3)))))
    assert parse_filter("NOT a = 1 AND b = 1 OR c = 1") == Or((And((Not(a), b)), c))
    assert parse_filter("NOT NOT a = 1") == Not(Not(a))


def test_parentheses_override_precedence_and_chains_flatten():
    a, b, c = (Compare(meta(k), "=", 1) for k in "abc")
    assert parse_filter("(a = 1 OR b = 1) AND c = 1") == And((Or((a, b)), c))
    assert parse_filter("a = 1 AND b = 1 AND c = 1") == And((a, b, c))
    assert parse_filter("a = 1 AND (b = 1 AND c = 1)") == And((a, And((b, c))))
    assert parse_filter("NOT (a = 1 OR b = 1)") == Not(Or((a, b)))
    assert parse_filter("((a = 1))") == a


def test_in_and_not_in_lists_keep_values_and_types_in_order():
    assert parse_filter("tier IN ('gold', 2, -1.5, true)") == InList(
        meta("tier"), ("gold", 2, -1.5, True), False)
    assert parse_filter("tier NOT IN ('x')") == InList(meta("tier"), ("x",), True)
    assert parse_filter("NOT tier IN ('x')") == Not(InList(meta("tier"), ("x",), False))


def test_keywords_are_case_insensitive_but_field_names_are_not():
    lower = parse_filter("a = 1 and not b in (true) or c not in (FALSE)")
    upper = parse_filter("a = 1 AND NOT b IN (TRUE) OR c NOT IN (false)")
    assert lower == upper
    assert parse_filter("Id = 'x'") == Compare(meta("Id"), "=", "x")
    assert parse_filter("id = 'x'") == Compare(std("id"), "=", "x")


def test_string_literals_take_either_quote_and_backslash_escapes():
    cases = {r"""a = 'it\'s'""": "it's", r'''a = "say \"hi\""''': 'say "hi"',
             r"""a = 'back\\slash'""": "back\\slash", r"""a = 'x\ny\tz\r'""": "x\ny\tz\r",
             """a = "it's" """: "it's", "a = ''": "", "a = 'ünï AND ('": "ünï AND ("}
    for text, value in cases.items():
        assert parse_filter(text) == Compare(meta("a"), "=", value), text


def test_numbers_keep_their_type_and_sign():
    values = {"7": 7, "-7": -7, "2.5": 2.5, "-.5": -0.5, ".25": 0.25, "1e3": 1000.0,
              "-2E-2": -0.02, "3.": 3.0}
    for text, value in values.items():
        node = parse_filter(f"x >= {text}")
        assert node == Compare(meta("x"), ">=", value) and type(node.value) is type(value), text
    assert parse_filter("x>=-1") == Compare(meta("x"), ">=", -1)
    assert parse_filter("x = true").value is True and parse_filter("x = False").value is False


def test_field_names_resolve_to_standard_fields_or_metadata_keys():
    assert parse_filter("language = 'en'").field == std("language")
    assert parse_filter("chunk_index < 3").field == std("chunk_index")
    assert parse_filter("metadata.category = 'x'").field == meta("category")
    assert parse_filter("metadata.id = 'x'").field == meta("id")
    assert parse_filter("metadata.and = 'x'").field == meta("and")
    assert parse_filter("a.b.c = 'x'").field == meta("a.b.c")
    assert parse_filter("metadata.`source-type` = 'x'").field == meta("source-type")
    assert parse_filter("`odd``name` = 'x'").field == meta("odd`name")
    assert parse_filter("`not` = 'x'").field == meta("not")
    assert parse_filter("catégorie = 'x'").field == meta("catégorie")


def test_whitespace_and_newlines_are_insignificant():
    assert parse_filter("  a=1\n\tAND\n b  !=  'x'  ") == parse_filter("a = 1 AND b != 'x'")


def test_referenced_fields_are_canonical_paths():
    node = parse_filter("(metadata.a = 1 OR language = 'en') AND NOT b IN (1) AND a > 0")
    assert referenced_fields(node) == {"metadata.a", "language", "metadata.b"}
    assert compile_filter(node).fields == frozenset(referenced_fields(node))


@settings(max_examples=200, deadline=None)
@given(trees)
def test_to_expression_round_trips_through_the_parser(tree):
    text = to_expression(tree)
    assert parse_filter(text) == tree
    assert to_expression(parse_filter(text)) == text   # also tells 1 from true and 1 from 1.0


# ---- errors --------------------------------------------------------------------------------------

ERRORS = [
    ("", 1, "empty"),
    ("   \t ", 1, "empty"),
    ("a = 'abc", 5, "unterminated string"),
    ('a = "abc\\"', 5, "unterminated string"),
    ("a => 1", 3, "unknown operator '=>'"),
    ("a == 1", 3, "unknown operator '=='"),
    ("a ! 1", 3, "unknown operator '!'"),
    ("a LIKE 'x'", 3, "expected a comparison operator"),
    ("a ~ 'x'", 3, "unexpected character '~'"),
    ("a >=", 5, "expected a value"),
    ("a = AND b = 1", 5, "expected a value"),
    ("a = tech", 5, "quote string values"),
    ("a = 1 b = 2", 7, "expected AND, OR or the end"),
    ("a = 1 'x'", 7, "expected AND, OR or the end"),
    ("a = 1)", 6, "unmatched ')'"),
    ("(a = 1", 7, "expected ')'"),
    ("a IN ()", 6, "empty IN list"),
    ("a NOT IN ( )", 10, "empty IN list"),
    ("a IN (1,)", 9, "expected a value"),
    ("a IN (1 2)", 9, "expected ',' or ')'"),
    ("a IN 1", 6, "expected '(' after IN"),
    ("a NOT 1", 7, "expected IN after NOT"),
    ("a = 1 AND", 10, "found end of expression"),
    ("'x' = a", 1, "the field goes on the left"),
    ("AND = 1", 1, "expected a field name"),
    ("a = 'x\\q'", 7, "unknown escape"),
    ("a = 1.2.3", 5, "malformed number"),
    ("a = 12abc", 5, "malformed number"),
    ("a = 1e999", 5, "out of range"),
    ("language = 5", 12, "holds text"),
    ("chunk_index = '3'", 15, "holds numbers"),
    ("chunk_index IN (1, true)", 20, "holds numbers"),
    ("a < true", 5, "= or !="),
    ("metadata. = 1", 10, "expected a name"),
    ("`a = 1", 1, "unterminated quoted name"),
]


@pytest.mark.parametrize("text,column,phrase", ERRORS)
def test_errors_name_the_column_and_what_was_expected(text, column, phrase):
    with pytest.raises(InvalidArgument) as err:
        parse_filter(text)
    message = err.value.message
    assert f"column {column}:" in message, message
    assert phrase in message, message


def test_errors_in_multi_line_expressions_name_the_line_too():
    with pytest.raises(InvalidArgument, match="line 3, column 5: unexpected character"):
        parse_filter("a = 1\nAND\nb = $")


def test_too_deep_nesting_is_refused_with_a_position():
    ok = "NOT " * (F.filter_depth_max - 1) + "a = 1"
    assert F.ast_depth(parse_filter(ok)) == F.filter_depth_max
    with pytest.raises(InvalidArgument, match=r"column 125: filter nests deeper than 32"):
        parse_filter("NOT " * F.filter_depth_max + "a = 1")
    with pytest.raises(InvalidArgument, match=r"column 33: filter nests deeper"):
        parse_filter("(" * 40 + "a = 1" + ")" * 40)
    # Alternating AND / OR grows the tree without NOT: caught where the level is built.
    text = "a = 1"
    for i in range(F.filter_depth_max):
        text = f"a = 1 {'AND' if i % 2 else 'OR'} ({text})"
    with pytest.raises(InvalidArgument, match="nests deeper"):
        parse_filter(text)


def test_a_hostile_expression_at_the_size_limit_fails_cleanly():
    # Deep enough to blow the Python stack in a naive parser, yet within the byte limit.
    with pytest.raises(InvalidArgument, match="nests deeper"):
        parse_filter("(" * 2000 + "a = 1" + ")" * 2000)


def test_too_long_expression_is_refused_before_parsing():
    clause = "a = 'xxxxxxxxxx' OR "
    text = clause * (F.filter_expression_bytes_max // len(clause) + 1) + "b = 1"
    assert len(text.encode()) > F.filter_expression_bytes_max
    with pytest.raises(InvalidArgument, match=r"bytes; the limit is 4096"):
        parse_filter(text)
    # The limit is in bytes, not characters.
    with pytest.raises(InvalidArgument, match="bytes"):
        parse_filter("a = '" + "é" * 2100 + "'")


def test_in_lists_are_bounded():
    values = ",".join(str(i % 10) for i in range(F.filter_in_values_max))
    assert len(parse_filter(f"a IN ({values})").values) == F.filter_in_values_max
    with pytest.raises(InvalidArgument, match="more than 1024 values"):
        parse_filter(f"a IN ({values}, 1)")


def test_non_string_expression_is_refused():
    with pytest.raises(InvalidArgument, match="must be a string"):
        parse_filter(b"a = 1")


def test_compile_checks_hand_built_trees():
    bad = [Compare(std("language"), "=", 5), Compare(meta("a"), "~", 1),
           Compare(meta("a"), "<", True), Compare(meta("a"), "=", float("nan")),
           Compare(meta("a"), "=", None), InList(meta("a"), ()), Compare(std("nope"), "=", "x"),
           InList(meta("a"), tuple(range(F.filter_in_values_max + 1))), "a = 1"]
    deep = Compare(meta("a"), "=", 1)
    for _ in range(F.filter_depth_max):
        deep = Not(deep)
    for node in bad + [deep]:
        with pytest.raises(InvalidArgument):
            compile_filter(node)


# ---- the filters map -----------------------------------------------------------------------------


def test_filters_map_is_anded_equality_and_matches_the_expression_form():
    assert filters_to_ast({"category": "tech"}) == parse_filter("category = 'tech'")
    assert filters_to_ast({"category": "tech", "language": "en", "chunk_index": "2"}) == \
        parse_filter("category = 'tech' AND language = 'en' AND chunk_index = 2")
    assert filters_to_ast({"metadata.id": "x", "source-type": "pdf"}) == \
        parse_filter("metadata.id = 'x' AND `source-type` = 'pdf'")
    # Metadata values stay strings: "2020" matches the stored string exactly, not 2020.0.
    assert filters_to_ast({"year": "2020"}) == Compare(meta("year"), "=", "2020")


def test_empty_or_missing_filters_mean_no_filter():
    assert filters_to_ast({}) is None and filters_to_ast(None) is None
    assert build_filter_ast() is None and build_filter_ast({}, "") is None
    assert build_filter_ast({"a": "x"}, "b = 1") == And((Compare(meta("a"), "=", "x"),
                                                         Compare(meta("b"), "=", 1)))
    assert build_filter_ast(None, "b = 1") == Compare(meta("b"), "=", 1)


def test_filters_map_errors():
    with pytest.raises(InvalidArgument, match="holds numbers"):
        filters_to_ast({"chunk_index": "two"})
    with pytest.raises(InvalidArgument, match="must be a string"):
        filters_to_ast({"a": 1})
    with pytest.raises(InvalidArgument, match="non-empty strings"):
        filters_to_ast({"": "x"})
    with pytest.raises(InvalidArgument, match="entries"):
        filters_to_ast({f"k{i}": "v" for i in range(F.filter_map_entries_max + 1)})
    with pytest.raises(InvalidArgument, match="bytes"):
        filters_to_ast({"a": "x" * F.filter_expression_bytes_max})


def test_filters_map_filters_rows():
    rows = [{"id": "1", "metadata": {"category": "tech", "year": "2020"}},
            {"id": "2", "metadata": {"category": "tech", "year": "2020.0"}},
            {"id": "3", "metadata": {"category": "art", "year": "2020"}}]
    node = filters_to_ast({"category": "tech", "year": "2020"})
    assert compile_filter(node).mask(ColumnView.from_records(rows)).tolist() == \
        [True, False, False]


# ---- semantics -----------------------------------------------------------------------------------

ROWS = [
    {"id": "r0", "language": "en", "chunk_index": 0, "metadata": {"tag": "x", "n": "5"}},
    {"id": "r1", "language": "de", "chunk_index": 1, "metadata": {"tag": "y", "n": "abc"}},
    {"id": "r2", "language": "en", "chunk_index": 2, "metadata": {"n": " 7.5 "}},
    {"id": "r3", "language": "fr", "chunk_index": 3, "metadata": {"tag": "", "flag": "TRUE"}},
]


def test_missing_metadata_is_null_and_every_comparison_with_null_is_false():
    # r2 has no `tag`; r3's tag is the empty string, which is a value, not NULL.
    assert mask_of("tag = 'x'", ROWS) == [True, False, False, False]
    assert mask_of("tag != 'x'", ROWS) == [False, True, False, True]
    assert mask_of("tag < 'zzz'", ROWS) == [True, True, False, True]
    assert mask_of("tag >= ''", ROWS) == [True, True, False, True]
    assert mask_of("tag IN ('x', 'y', '')", ROWS) == [True, True, False, True]
    assert mask_of("tag NOT IN ('x')", ROWS) == [False, True, False, True]


def test_not_simply_negates_so_it_is_true_for_null():
    assert mask_of("NOT tag = 'x'", ROWS) == [False, True, True, True]
    assert mask_of("NOT tag IN ('x')", ROWS) == [False, True, True, True]
    assert mask_of("NOT tag != 'x'", ROWS) == [True, False, True, False]


def test_number_literals_compare_numerically_and_non_numbers_never_match():
    assert mask_of("n = 5", ROWS) == [True, False, False, False]
    assert mask_of("n = 5.0", ROWS) == [True, False, False, False]
    assert mask_of("n > 6", ROWS) == [False, False, True, False]
    assert mask_of("n != 5", ROWS) == [False, False, True, False]   # 'abc' and missing: false
    assert mask_of("n IN (7.5, 1)", ROWS) == [False, False, True, False]
    assert mask_of("n NOT IN (5)", ROWS) == [False, False, True, False]
    assert mask_of("n = '5'", ROWS) == [True, False, False, False]   # string: exact text
    assert mask_of("n = '7.5'", ROWS) == [False, False, False, False]
    assert mask_of("n > '6'", ROWS) == [False, True, False, False]   # 'abc' > '6' as text


def test_boolean_literals_match_true_and_false_strings_in_any_case():
    rows = [{"metadata": {"f": v}} for v in ["true", "False", " TRUE ", "yes", "1"]] + [{}]
    assert mask_of("f = true", rows) == [True, False, True, False, False, False]
    assert mask_of("f != true", rows) == [False, True, False, False, False, False]
    assert mask_of("f IN (false)", rows) == [False, True, False, False, False, False]
    assert mask_of("f NOT IN (false)", rows) == [True, False, True, False, False, False]
    assert mask_of("f = 'true'", rows) == [True, False, False, False, False, False]


def test_standard_fields_compare_as_their_type():
    assert mask_of("language = 'en'", ROWS) == [True, False, True, False]
    assert mask_of("language IN ('de', 'fr')", ROWS) == [False, True, False, True]
    assert mask_of("chunk_index >= 2", ROWS) == [False, False, True, True]
    assert mask_of("chunk_index IN (1, 3.0, 2.5, 99999999999999999999)", ROWS) == \
        [False, True, False, True]
    assert mask_of("chunk_index NOT IN (1, 2.5)", ROWS) == [True, False, True, True]
    assert mask_of("chunk_index < 1.5", ROWS) == [True, True, False, False]
    assert mask_of("id > 'r1' AND id != 'r3'", ROWS) == [False, False, True, False]


def test_null_in_standard_columns_follows_the_same_rule():
    view = ColumnView({"language": np.array(["en", None, "de"], dtype=object),
                       "chunk_index": np.array([1.0, 2.0, np.nan])})
    assert compile_filter(parse_filter("language != 'en'")).mask(view).tolist() == \
        [False, False, True]
    assert compile_filter(parse_filter("NOT language = 'en'")).mask(view).tolist() == \
        [False, True, True]
    assert compile_filter(parse_filter("chunk_index != 1")).mask(view).tolist() == \
        [False, True, False]
    assert compile_filter(parse_filter("language < 'z'")).mask(view).tolist() == \
        [True, False, True]


@settings(max_examples=300, deadline=None)
@given(rows_strategy, trees, st.randoms(use_true_random=False))
def test_vectorized_mask_agrees_with_the_per_row_oracle(rows, tree, rnd):
    rows = rows + DIVERSE_ROWS
    compiled = compile_filter(tree)
    view = ColumnView.from_records(rows)
    got = compiled.mask(view)
    assert got.dtype == bool and got.shape == (len(rows),)
    assert got.tolist() == [oracle(tree, row) for row in rows]
    # Evaluating on a subset of rows (HNSW candidates, samples) gives the same answers.
    subset = np.asarray([rnd.randrange(len(rows)) for _ in range(len(rows) // 2)]
                        if rows else [], dtype=np.intp)
    assert compiled.mask(view, subset).tolist() == got[subset].tolist()


# ---- MetadataColumns -----------------------------------------------------------------------------


def test_metadata_columns_serve_strings_numbers_and_flags():
    cols = MetadataColumns([{"a": "1"}, None, {"a": "x", "b": 2}, {"a": " 2.5 ", "c": None}])
    assert cols.strings("a").tolist() == ["1", None, "x", " 2.5 "]
    assert cols.present("a").tolist() == [True, False, True, True]
    np.testing.assert_array_equal(cols.numbers("a"), [1.0, np.nan, np.nan, 2.5])
    assert cols.strings("b").tolist() == [None, None, "2", None]      # non-strings -> str
    assert cols.present("c").tolist() == [False] * 4                  # None value = missing
    assert cols.booleans("a").tolist() == [-1, -1, -1, -1]
    assert cols.strings("a").dtype == object and cols.numbers("a").dtype == np.float64
    with pytest.raises(ValueError):
        cols.strings("a")[0] = "mutated"                              # the cache is read-only
    assert cols.cached_keys() == {"a", "b", "c"}


def test_metadata_columns_delete_out_of_range_is_an_internal_error():
    cols = MetadataColumns([{"a": "1"}])
    with pytest.raises(Internal):
        cols.delete([1])
    with pytest.raises(Internal):
        cols.delete([-1])


@settings(max_examples=60, deadline=None)
@given(rows_strategy, st.lists(st.one_of(
    st.tuples(st.just("append"), rows_strategy.map(lambda rs: rs[:6])),
    st.tuples(st.just("delete"), st.lists(st.integers(0, 40), max_size=5)),
    st.tuples(st.just("invalidate"), st.sampled_from([None, "a"])),
), max_size=6), trees)
def test_append_and_delete_keep_cached_columns_right(rows, ops, tree):
    compiled = compile_filter(tree)
    cols = MetadataColumns(r["metadata"] for r in rows)
    current = list(rows)

    def view():
        standard = ColumnView.from_records(current)
        return ColumnView({n: standard._standard[n] for n in F.STANDARD_FIELDS}, cols,
                          len(current))

    for kind in ("strings", "numbers", "booleans", "filled_strings"):
        getattr(cols, kind)("a")                                       # warm part of the cache
    compiled.mask(view())
    for op, arg in ops:
        if op == "append":
            cols.append(r["metadata"] for r in arg)
            current.extend(arg)
        elif op == "delete":
            doomed = [i for i in arg if i < len(current)]
            cols.delete(doomed)
            current = [r for i, r in enumerate(current) if i not in set(doomed)]
        else:
            cols.invalidate(arg)
        assert len(cols) == len(current)
        assert compiled.mask(view()).tolist() == [oracle(tree, r) for r in current]
        fresh = MetadataColumns(r["metadata"] for r in current)
        for key in cols.cached_keys():
            assert cols.strings(key).tolist() == fresh.strings(key).tolist()
            np.testing.assert_array_equal(cols.numbers(key), fresh.numbers(key))
            assert cols.booleans(key).tolist() == fresh.booleans(key).tolist()


def test_a_view_over_mutated_metadata_is_refused():
    cols = MetadataColumns([{"a": "1"}])
    view = ColumnView(metadata=cols)
    cols.append([{"a": "2"}])
    with pytest.raises(Internal, match="stale"):
        compile_filter(parse_filter("a = 1")).mask(view)


def test_a_view_without_a_referenced_standard_column_is_an_internal_error():
    view = ColumnView({"id": np.array(["x"], dtype=object)})
    with pytest.raises(Internal, match="no 'language' column"):
        compile_filter(parse_filter("language = 'en'")).mask(view)
    with pytest.raises(Internal, match="disagree"):
        ColumnView({"id": np.array(["x"], dtype=object)}, MetadataColumns([{}, {}]))


# ---- selectivity and speed -----------------------------------------------------------------------


def _big_view(n: int, seed: int) -> ColumnView:
    rng = np.random.default_rng(seed)
    categories = np.array(["tech", "art", "news", "sport"])[rng.integers(0, 4, n)]
    years = rng.integers(2010, 2025, n)
    languages = np.array(["en", "de", "fr"], dtype=object)[rng.integers(0, 3, n)]
    metadata = [{"category": c, "year": str(y)} for c, y in zip(categories.tolist(),
                                                                years.tolist())]
    return ColumnView({"language": languages, "chunk_index": rng.integers(0, 50, n)},
                      MetadataColumns(metadata), n)


def test_selectivity_estimate_is_close_to_the_true_fraction():
    view = _big_view(10_000, seed=1)
    for text in ["category = 'tech' AND year >= 2020", "language != 'en' OR chunk_index < 5",
                 "year IN (2011, 2012)"]:
        compiled = compile_filter(parse_filter(text))
        true = compiled.mask(view).mean()
        for seed in range(3):
            estimate = estimate_selectivity(compiled, view, sample_size=1000, rng=seed)
            assert abs(estimate - true) < 0.05, (text, estimate, true)


def test_selectivity_is_exact_on_small_views_and_zero_on_empty_ones():
    compiled = compile_filter(parse_filter("tag = 'x'"))
    assert estimate_selectivity(compiled, ColumnView.from_records(ROWS)) == 0.25
    assert estimate_selectivity(compiled, ColumnView.from_records([])) == 0.0


def test_masking_100k_rows_with_three_clauses_is_fast():
    view = _big_view(100_000, seed=2)
    compiled = compile_filter(parse_filter(
        "category = 'tech' AND year >= 2020 AND language IN ('en', 'de')"))
    started = time.perf_counter()
    cold = compiled.mask(view)                     # builds and caches the metadata columns
    cold_s = time.perf_counter() - started
    started = time.perf_counter()
    warm = compiled.mask(view)
    warm_s = time.perf_counter() - started
    assert cold.tolist() == warm.tolist() and 0 < warm.sum() < len(warm)
    assert warm_s < 0.25, warm_s
    assert cold_s < 1.5, cold_s
