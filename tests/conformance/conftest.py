"""Fixtures of the conformance suite: the simulator's nested events as Parquet, read by real Apache
Spark (one local session for the whole test session) and ingested into the emulator as two batches
(two snapshots), with both sides' SQL runners."""

from __future__ import annotations

import logging
import os
from datetime import date, timedelta
from pathlib import Path

import psycopg2
import pyarrow.parquet as pq
import pytest
from propensity.simulation import history_days, make_population

from tests.emulator import create_dataset, create_event_schema, get_dataset, ingest, parquet_bytes
from tests.propensity import TENANT, simulate_history
from tests.support.emulator import AEPClient

RUN_DATE = date(2026, 3, 12)
HISTORY_DAYS = 14
PROFILES = 1500


@pytest.fixture(scope="session")
def nested_events(tmp_path_factory) -> dict[str, Path]:
    """The simulated history as two nested Parquet files: every day but the last, and the last day."""
    population = make_population(seed=23, size=PROFILES, start=history_days(RUN_DATE, HISTORY_DAYS)[0])
    folder = tmp_path_factory.mktemp("conformance")
    files = {
        "first": simulate_history(population, RUN_DATE - timedelta(days=1), HISTORY_DAYS - 1),
        "latest": simulate_history(population, RUN_DATE, 1),
    }
    paths = {}
    for name, table in files.items():
        paths[name] = folder / f"{name}.parquet"
        pq.write_table(table, paths[name])
    return paths


@pytest.fixture(scope="session")
def emulator_events(emulator_session, nested_events) -> str:
    """The events dataset on the emulator, loaded batch by batch; its Query Service table name."""
    aep = AEPClient(emulator_session.url, emulator_session.settings, emulator_session.sandbox)
    dataset_id = create_dataset(aep, create_event_schema(aep, TENANT), name=f"conformance events {os.getpid()}")
    for name in ("first", "latest"):
        batch = ingest(aep, dataset_id, {f"{name}.parquet": parquet_bytes(pq.read_table(nested_events[name]))})
        assert batch["status"] == "success", batch
    return get_dataset(aep, dataset_id)["tags"]["adobe/pqs/table"][0]


@pytest.fixture(scope="session")
def wire(emulator_session, emulator_events):
    """A psycopg2 connection to the emulator's Query Service endpoint (simple protocol, as aepp's
    InteractiveQuery2 and the CMLE notebooks use it)."""
    aep = AEPClient(emulator_session.url, emulator_session.settings, emulator_session.sandbox)
    params = aep.get("/data/foundation/query/connection_parameters").json()
    conn = psycopg2.connect(
        host=params["host"],
        port=params["port"],
        user=params["username"],
        password=params["token"],
        dbname=params["dbName"],
        sslmode="disable",
    )
    conn.autocommit = True
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def spark(tmp_path_factory, nested_events, emulator_events):
    """A local Spark session, configured as Query Service reads SQL: UTC, ANSI mode with double-quoted
    identifiers; the events as views named like the emulator's table (plus one per batch)."""
    pyspark_sql = pytest.importorskip("pyspark.sql")
    # py4j logs its shutdown at INFO after pytest has closed the captured streams.
    logging.getLogger("py4j").setLevel(logging.WARNING)
    warehouse = tmp_path_factory.mktemp("spark-warehouse")
    session = (
        pyspark_sql.SparkSession.builder.master("local[2]")
        .appName("aep-conformance")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
        .config("spark.sql.ansi.enabled", "true")
        .config("spark.sql.ansi.doubleQuotedIdentifiers", "true")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.warehouse.dir", str(warehouse))
        .config("spark.driver.memory", "1g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    both = session.read.parquet(str(nested_events["first"]), str(nested_events["latest"]))
    both.createOrReplaceTempView(emulator_events)
    session.read.parquet(str(nested_events["first"])).createOrReplaceTempView(f"{emulator_events}_first_batch")
    session.read.parquet(str(nested_events["latest"])).createOrReplaceTempView(f"{emulator_events}_latest_batch")
    yield session
    session.stop()
