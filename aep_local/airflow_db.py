"""Prepare the local Airflow metadata database: create it in the stack's PostgreSQL, migrate it,
and define the ``aep_api`` pool the DAG's AEP tasks run in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import psycopg

from aep_local.stack import AIRFLOW_DATABASE, StackSettings

AEP_POOL = ("aep_api", "4", "AEP API calls: keeps the pipeline within AEP's rate limits")


def _airflow(*args: str) -> None:
    cli = Path(sys.executable).with_name("airflow")
    subprocess.run([str(cli), *args], check=True, stdout=subprocess.DEVNULL, env=os.environ)


def prepare(stack: StackSettings) -> None:
    """Create the ``airflow`` database when missing, migrate it (idempotent) and set the AEP pool.

    :param stack: the local stack's settings (its PostgreSQL holds the metadata).
    """
    dsn = urlsplit(stack.aep.pg_dsn)
    with psycopg.connect(dsn._replace(path="/postgres").geturl(), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (AIRFLOW_DATABASE,)).fetchone():
            conn.execute(f'CREATE DATABASE "{AIRFLOW_DATABASE}"')
    _airflow("db", "migrate")
    _airflow("pools", "set", *AEP_POOL)
