"""Conformance: every SQL template of ``include/sql`` and the corpus of Query Service SQL
(tests/conformance/corpus.py) run on the emulator's Query Service and on real Apache Spark over the
same nested events, and give equal results (numbers within float tolerance).

Spark needs Java (``.ci/run`` installs a Debian JRE when ``java`` is missing); ``-m "not spark"``
leaves these tests out.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from propensity.events import TEMPLATE_PARAMS
from propensity.simulation import history_days
from propensity.sql import render

from aep_emulator import qs_sql
from tests.conformance.conftest import HISTORY_DAYS, RUN_DATE
from tests.conformance.corpus import CASES, Case
from tests.propensity import TENANT

pytestmark = [pytest.mark.integration, pytest.mark.spark]

REL_TOL = 1e-9
ABS_TOL = 1e-9


def _plain(value: Any, *, from_spark: bool) -> Any:
    """One value in a form both engines share: structs as dicts without NULL fields (the emulator's
    objects carry every schema field, Spark's only the file's), a struct of NULLs as NULL, numbers as
    float, timestamps in UTC."""
    if from_spark and hasattr(value, "asDict"):
        value = value.asDict(recursive=True)
    if isinstance(value, dict):
        cleaned = {k: v for k, v in ((k, _plain(v, from_spark=from_spark)) for k, v in value.items()) if v is not None}
        return cleaned or None
    if isinstance(value, list):
        return [_plain(v, from_spark=from_spark) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float, Decimal)):
        return float(value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            # PySpark hands naive local times; PostgreSQL naive ones are UTC (the session's zone).
            return value.astimezone(UTC) if from_spark else value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    if isinstance(value, date):
        return value
    return value


def _sort_key(row: tuple) -> tuple:
    return tuple((v is None, str(type(v)), round(v, 6) if isinstance(v, float) else str(v)) for v in row)


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=ABS_TOL)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_equal, a, b))
    return a == b


def run_on_emulator(wire, sql: str) -> tuple[list[str], list[tuple]]:
    """The script as one simple-protocol query; psycopg2 keeps the last statement's result."""
    with wire.cursor() as cur:
        cur.execute(sql)
        if cur.description is None:
            return [], []
        names = [c.name for c in cur.description]
        return names, [tuple(_plain(v, from_spark=False) for v in row) for row in cur.fetchall()]


def run_on_spark(spark, sql: str) -> tuple[list[str], list[tuple]]:
    frame = None
    for statement in qs_sql.split_statements(sql):
        frame = spark.sql(statement)
    rows = frame.collect()
    return frame.columns, [tuple(_plain(v, from_spark=True) for v in row) for row in rows]


def _without_absent_fields(names: list[str], rows: list[tuple], spark_names: list[str]) -> tuple[list[str], list]:
    """Drop the columns Spark lacks that are NULL in every row: fields of the dataset's schema that the
    Parquet file does not carry (``SELECT *`` on AEP returns the schema's fields, Spark the file's)."""
    keep = [i for i, name in enumerate(names) if name in spark_names or any(row[i] is not None for row in rows)]
    return [names[i] for i in keep], [tuple(row[i] for i in keep) for row in rows]


def assert_same(emulator_result, spark_result, *, ordered: bool, compare: str = "rows") -> None:
    (names, rows), (spark_names, spark_rows) = emulator_result, spark_result
    names, rows = _without_absent_fields(names, rows, spark_names)
    if names != spark_names and sorted(names) == sorted(spark_names):
        # SELECT *: the emulator lists the schema's fields in schema order, Spark the file's columns.
        order = [names.index(n) for n in spark_names]
        names, rows = spark_names, [tuple(row[i] for i in order) for row in rows]
    # Spark names an unaliased expression after its text (count(1)); Query Service's names differ there.
    assert [n for n, s in zip(names, spark_names, strict=True) if "(" not in s] == [
        s for s in spark_names if "(" not in s
    ]
    assert len(rows) == len(spark_rows)
    if compare == "count":
        return
    if not ordered:
        rows, spark_rows = sorted(rows, key=_sort_key), sorted(spark_rows, key=_sort_key)
    for i, (row, spark_row) in enumerate(zip(rows, spark_rows, strict=True)):
        assert all(map(_equal, row, spark_row)), f"row {i}: emulator {row} != spark {spark_row}"


def _fill(sql: str, table: str) -> str:
    return sql.replace("{table}", table).replace("{tenant}", TENANT)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_corpus_statement_gives_sparks_result(case: Case, wire, spark, emulator_events):
    sql = _fill(case.sql, emulator_events)
    spark_sql = _fill(case.spark_sql or case.sql, emulator_events)
    emulator_result = run_on_emulator(wire, sql)
    spark_result = run_on_spark(spark, spark_sql)
    if case.result_table:
        emulator_result = run_on_emulator(wire, f"SELECT * FROM {case.result_table}")
        spark_result = run_on_spark(spark, f"SELECT * FROM {case.result_table}")
    assert emulator_result[1] or case.compare == "count", "the case selects no rows: it would prove nothing"
    assert_same(emulator_result, spark_result, ordered=case.ordered, compare=case.compare)


def _eda_params(table: str) -> dict:
    start = history_days(RUN_DATE, HISTORY_DAYS)[0]
    return {**TEMPLATE_PARAMS, "events_table": table, "start": start.isoformat(), "end": RUN_DATE.isoformat()}


@pytest.mark.parametrize("template", ["eda_row_counts.sql", "eda_event_funnel.sql", "eda_conversion_rate.sql"])
def test_eda_template_gives_sparks_result(template, wire, spark, emulator_events):
    sql = render(template, tenant=TENANT, params=_eda_params(emulator_events))
    assert_same(run_on_emulator(wire, sql), run_on_spark(spark, sql), ordered=template == "eda_event_funnel.sql")


@pytest.mark.parametrize("with_label", [True, False], ids=["training", "scoring"])
def test_featurize_template_gives_sparks_result(with_label, wire, spark, emulator_events):
    as_of = date(2026, 3, 5) if with_label else RUN_DATE
    output = f"conformance_features_{'training' if with_label else 'scoring'}"
    params = {
        **TEMPLATE_PARAMS,
        "events_table": emulator_events,
        "output_table": output,
        "as_of": as_of.isoformat(),
        "label_window_days": 5,
        "lookback_days": [1, 3, 7],
        "with_label": with_label,
    }
    sql = render("featurize.sql", tenant=TENANT, params=params)
    run_on_emulator(wire, sql)
    run_on_spark(spark, sql)
    emulator_result = run_on_emulator(wire, f"SELECT * FROM {output} ORDER BY userid")
    assert len(emulator_result[1]) > 100
    assert_same(emulator_result, run_on_spark(spark, f"SELECT * FROM {output} ORDER BY userid"), ordered=True)
