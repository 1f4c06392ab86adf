"""Featurization and EDA SQL: the templates' one Spark SQL text, translated as the emulator's Query
Service translates it, runs on real PostgreSQL over simulated events laid out as the emulator stores
them, and matches a pandas recomputation. (tests/conformance runs the same text on real Spark.)"""

from __future__ import annotations

import io
import os
import uuid
from datetime import date, timedelta

import jinja2
import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from propensity.events import ALL_EVENT_TYPE_NAMES, CONVERSION_EVENT, FEATURE_EVENT_TYPES, TEMPLATE_PARAMS
from propensity.simulation import flatten, history_days, make_population
from propensity.sql import render

from aep_emulator import qs_exec, qs_sql, qs_translate
from tests.propensity import TENANT, events_frame, expected_features, simulate_history

pytestmark = pytest.mark.integration

PG_DSN = os.environ.get("AEP_PG_DSN", "postgresql://aep:aep@127.0.0.1:55432/aep")
RUN_DATE = date(2026, 3, 12)
HISTORY = 70
LABEL_WINDOW_DAYS = 14
TRAINING_AS_OF = RUN_DATE - timedelta(days=LABEL_WINDOW_DAYS)
LOOKBACK_DAYS = [7, 30, 90]
PG_TYPES = {pa.string(): "text", pa.timestamp("us", tz="UTC"): "timestamptz", pa.float64(): "double precision"}


def featurize_params(output_table: str, events_table: str, as_of: date, with_label: bool) -> dict:
    return {
        **TEMPLATE_PARAMS,
        "events_table": events_table,
        "output_table": output_table,
        "as_of": as_of.isoformat(),
        "label_window_days": LABEL_WINDOW_DAYS,
        "lookback_days": LOOKBACK_DAYS,
        "with_label": with_label,
    }


def eda_params(events_table: str) -> dict:
    start = history_days(RUN_DATE, HISTORY)[0]
    return {**TEMPLATE_PARAMS, "events_table": events_table, "start": start.isoformat(), "end": RUN_DATE.isoformat()}


def load_events(conn: psycopg.Connection, table_name: str, flat: pa.Table) -> None:
    """Create ``table_name`` with quoted dotted columns (the emulator's layout) and COPY ``flat`` in."""
    columns = ", ".join(f'"{field.name}" {PG_TYPES[field.type]}' for field in flat.schema)
    conn.execute(f"CREATE TABLE {table_name} ({columns})")
    # Every non-null value quoted, nulls bare: PostgreSQL's CSV tells "" from NULL that way.
    buffer = io.BytesIO()
    pacsv.write_csv(flat, buffer, pacsv.WriteOptions(include_header=False, quoting_style="all_valid"))
    with conn.cursor().copy(f"COPY {table_name} FROM STDIN WITH (FORMAT csv)") as copy:
        copy.write(buffer.getvalue())


def run_spark_sql(conn: psycopg.Connection, schema: str, sql: str) -> psycopg.Cursor:
    """Every statement of ``sql`` translated by the emulator's Query Service layer, then run."""
    cursor = None
    for statement in qs_sql.split_statements(sql):
        translated = qs_translate.translate(statement, lambda tables: qs_exec.table_columns(conn, schema, tables))
        cursor = conn.execute(translated.sql)
    return cursor


def query_frame(conn: psycopg.Connection, schema: str, sql: str) -> pd.DataFrame:
    cursor = run_spark_sql(conn, schema, sql)
    return pd.DataFrame(cursor.fetchall(), columns=[column.name for column in cursor.description])


@pytest.fixture(scope="module")
def events():
    population = make_population(seed=11, size=10_000, start=history_days(RUN_DATE, HISTORY)[0])
    return simulate_history(population, RUN_DATE, HISTORY)


@pytest.fixture(scope="module")
def pg(events):
    """A connection to a scratch schema (its search path, in UTC as Query Service) holding the events
    as ``events``; dropped at the end."""
    schema = f"test_feat_{uuid.uuid4().hex[:10]}"
    options = f"-c search_path={schema} -c TimeZone=UTC"
    with psycopg.connect(PG_DSN, autocommit=True, options=options) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        try:
            load_events(conn, "events", flatten(events))
            yield conn, schema
        finally:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def run_featurize(pg, as_of: date, with_label: bool) -> pd.DataFrame:
    conn, schema = pg
    output = f"features_{'training' if with_label else 'scoring'}_{as_of:%Y%m%d}"
    run_spark_sql(
        conn,
        schema,
        render("featurize.sql", tenant=TENANT, params=featurize_params(output, "events", as_of, with_label)),
    )
    return query_frame(conn, schema, f"SELECT * FROM {output} ORDER BY userid")


@pytest.fixture(scope="module")
def training_set(pg):
    return run_featurize(pg, TRAINING_AS_OF, with_label=True)


@pytest.fixture(scope="module")
def expected_training(events):
    return expected_features(events_frame(events), TRAINING_AS_OF, LOOKBACK_DAYS, LABEL_WINDOW_DAYS)


def assert_features_match(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert actual["userid"].tolist() == expected.index.tolist()
    for column in expected.columns.drop("label"):
        if column.startswith("days_since_"):
            np.testing.assert_allclose(actual[column].astype(float), expected[column], rtol=1e-9, err_msg=column)
        else:
            assert actual[column].tolist() == expected[column].tolist(), column


def test_training_set_has_one_row_per_user_and_the_as_of_date(training_set):
    assert len(training_set) > 1000
    assert training_set["userid"].is_unique
    assert set(training_set["as_of_date"]) == {TRAINING_AS_OF}


def test_training_set_matches_a_pandas_recomputation(training_set, expected_training):
    assert_features_match(training_set, expected_training)
    assert training_set["label"].tolist() == expected_training["label"].tolist()
    assert 0 < training_set["label"].mean() < 0.2


def test_users_converted_before_the_cutoff_are_excluded(training_set, events):
    frame = events_frame(events)
    converted_before = frame.userid[
        (frame.event_type == CONVERSION_EVENT) & (frame.event_time < pd.Timestamp(TRAINING_AS_OF, tz="UTC"))
    ]
    assert len(converted_before) > 0
    assert not set(converted_before) & set(training_set["userid"])


def test_never_is_distinct_from_just_now(training_set):
    for event in FEATURE_EVENT_TYPES:
        since, has = training_set[f"days_since_{event.slug}"], training_set[f"has_{event.slug}"]
        assert (since.isna() == (has == 0)).all(), event.slug
        assert (since.dropna() >= 0).all() and (since.dropna() <= max(LOOKBACK_DAYS)).all(), event.slug
    assert (training_set["has_email_clicked"] == 0).any()
    assert (training_set["days_since_email_sent"] < 1).any()


def test_every_feature_column_varies(training_set):
    features = [c for c in training_set.columns if c.startswith(("cnt_", "days_since_", "has_"))]
    assert len(features) == len(FEATURE_EVENT_TYPES) * (len(LOOKBACK_DAYS) + 2)
    constant = [c for c in features if training_set[c].nunique(dropna=True) < 2]
    assert constant == []


def test_scoring_set_has_no_label_and_the_same_features_as_pandas(pg, events):
    scoring_set = run_featurize(pg, RUN_DATE, with_label=False)
    expected = expected_features(events_frame(events), RUN_DATE, LOOKBACK_DAYS, LABEL_WINDOW_DAYS)
    assert scoring_set["label"].isna().all()
    assert set(scoring_set["as_of_date"]) == {RUN_DATE}
    assert_features_match(scoring_set, expected)


def test_scoring_mode_ignores_events_after_the_cutoff(pg, training_set):
    """Same cut-off, both modes: identical features, so the label never leaks into them."""
    scoring_set = run_featurize(pg, TRAINING_AS_OF, with_label=False)
    pd.testing.assert_frame_equal(scoring_set.drop(columns="label"), training_set.drop(columns="label"))


def test_rerunning_the_featurization_replaces_its_table(pg, training_set):
    assert run_featurize(pg, TRAINING_AS_OF, with_label=True).equals(training_set)


def test_event_funnel_counts_every_known_type(pg, events):
    conn, schema = pg
    funnel = query_frame(conn, schema, render("eda_event_funnel.sql", tenant=TENANT, params=eda_params("events")))
    frame = events_frame(events)
    assert funnel["event_type"].tolist() == list(ALL_EVENT_TYPE_NAMES)
    assert funnel["funnel_position"].notna().all(), "no unknown event types"
    counts = frame.groupby("event_type").size()
    users = frame.groupby("event_type").userid.nunique()
    for row in funnel.itertuples():
        assert row.event_count == counts.get(row.event_type, 0)
        assert row.user_count == users.get(row.event_type, 0)


def test_conversion_rate_counts_distinct_users(pg, events):
    conn, schema = pg
    rate = query_frame(
        conn, schema, render("eda_conversion_rate.sql", tenant=TENANT, params=eda_params("events"))
    ).iloc[0]
    frame = events_frame(events)
    converters = frame.userid[frame.event_type == CONVERSION_EVENT].nunique()
    assert rate.active_users == frame.userid.nunique()
    assert rate.converted_users == converters
    assert rate.conversion_rate == pytest.approx(converters / frame.userid.nunique())


def test_row_counts(pg, events):
    conn, schema = pg
    counts = query_frame(conn, schema, render("eda_row_counts.sql", tenant=TENANT, params=eda_params("events"))).iloc[0]
    frame = events_frame(events)
    assert counts.event_count == len(frame)
    assert counts.user_count == frame.userid.nunique()
    assert counts.first_event_at == frame.event_time.min()


@pytest.mark.parametrize("with_label", [True, False])
def test_featurization_is_spark_sql_over_nested_paths(with_label):
    sql = render(
        "featurize.sql",
        tenant=TENANT,
        params=featurize_params("features_out", "cmle_events", TRAINING_AS_OF, with_label),
    )
    assert [qs_translate.kind_of(s) for s in qs_sql.split_statements(sql)] == ["drop", "ctas"]
    assert "_acme.userid" in sql and '"' not in sql
    assert ("INTERVAL 14 DAYS" in sql) == with_label


def test_render_is_strict():
    with pytest.raises(jinja2.UndefinedError):
        render("featurize.sql", tenant=TENANT, params={"events_table": "cmle_events"})
