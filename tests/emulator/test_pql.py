"""The PQL subset: parsing, compilation to SQL, and the errors callers see."""

import pytest

from aep_emulator.pql import BoolOp, Compare, Literal, Not, NullCheck, Path, PQLError, compile_predicate, parse, paths

COLUMNS = {
    "_acme.propensity": "double precision",
    "_acme.modelVersion": "text",
    "_acme.isSubscriber": "boolean",
    "person.name.lastName": "text",
    "_acme.visits": "bigint",
}


def test_range_with_and_parses_to_two_comparisons():
    node = parse("_acme.propensity >= 0.2 and _acme.propensity <= 0.93")
    assert node == BoolOp(
        "and",
        (
            Compare(Path("_acme.propensity"), ">=", Literal(0.2)),
            Compare(Path("_acme.propensity"), "<=", Literal(0.93)),
        ),
    )


def test_and_binds_tighter_than_or_and_not_applies_to_one_term():
    node = parse('not _acme.visits = 1 and person.name.lastName = "Doe" or _acme.isSubscriber = true')
    assert isinstance(node, BoolOp) and node.op == "or"
    left, right = node.operands
    assert left.op == "and" and isinstance(left.operands[0], Not)
    assert right == Compare(Path("_acme.isSubscriber"), "=", Literal(True))


def test_parentheses_and_null_checks():
    node = parse("(_acme.visits > 3 or exists person.name.lastName) and _acme.modelVersion.isNotNull()")
    assert node.op == "and"
    assert node.operands[0].operands[1] == NullCheck(Path("person.name.lastName"), is_null=False)
    assert node.operands[1] == NullCheck(Path("_acme.modelVersion"), is_null=False)
    assert paths(node) == {"_acme.visits", "person.name.lastName", "_acme.modelVersion"}


def test_compiles_to_parameterised_sql_on_quoted_dotted_columns():
    sql, params = compile_predicate('_acme.propensity >= 0.2 and person.name.lastName != "O\'Hara"', COLUMNS)
    assert sql == '(("_acme.propensity" >= %s) AND ("person.name.lastName" <> %s))'
    assert params == [0.2, "O'Hara"]


def test_not_treats_a_missing_value_as_false_inside():
    sql, params = compile_predicate("not (_acme.visits < 2)", COLUMNS)
    assert sql == '(NOT COALESCE(("_acme.visits" < %s), false))'
    assert params == [2]


def test_is_null_compiles_without_parameters():
    assert compile_predicate("_acme.modelVersion.isNull()", COLUMNS) == ('("_acme.modelVersion" IS NULL)', [])


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        pytest.param("", "empty", id="empty"),
        pytest.param("_acme.propensity >=", "unexpected end", id="dangling-operator"),
        pytest.param("_acme.propensity >= 0.2 and", "unexpected end", id="dangling-and"),
        pytest.param("(_acme.propensity > 1", "unexpected end", id="unbalanced"),
        pytest.param("_acme.propensity ~ 1", "unexpected character", id="bad-operator"),
        pytest.param("_acme.propensity > _acme.visits", "expected a number, string or boolean", id="path-rhs"),
        pytest.param("_acme.unknown > 1", "'_acme.unknown' is not defined", id="unknown-field"),
        pytest.param('_acme.propensity > "high"', "compared with a string", id="string-vs-number"),
        pytest.param("person.name.lastName = 3", "compared with a number", id="number-vs-string"),
        pytest.param("_acme.isSubscriber > true", "only = and !=", id="ordered-boolean"),
    ],
)
def test_invalid_expressions_raise_a_clear_error(expression, message):
    with pytest.raises(PQLError, match="Invalid PQL") as info:
        compile_predicate(expression, COLUMNS)
    assert message in str(info.value)
