"""The one rule that turns an Airflow run into the as-of date every task works on."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any


def resolve_as_of_date(context: dict[str, Any]) -> date:
    """The run's as-of date (the scoring cut-off), never wall-clock time.

    | run | as-of date |
    |---|---|
    | manual with ``params.as_of_date`` | that date |
    | scheduled or backfill (real data interval) | ``data_interval_end`` (the day the interval closes) |
    | manual without the param, logical date set | ``logical_date`` |
    | manual without the param or logical date | ``dag_run.run_after`` minus one day |

    ``data_interval_end`` is used for scheduled runs so a daily run at 02:00 on day D scores with
    all of day D-1's events: the interval [D-1, D) is complete when the run starts.

    :param context: the task's Airflow context.
    """
    params = context.get("params") or {}
    explicit = params.get("as_of_date")
    if explicit:
        return date.fromisoformat(str(explicit))
    dag_run = context.get("dag_run")
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is not None and end is not None and end > start:
        return _as_date(end)
    logical = context.get("logical_date")
    if logical is not None:
        return _as_date(logical)
    run_after = getattr(dag_run, "run_after", None)
    if run_after is None:
        raise ValueError("cannot resolve the as-of date: the run has no data interval, logical date or run_after")
    return _as_date(run_after) - timedelta(days=1)


def _as_date(value: datetime | date) -> date:
    return value.date() if isinstance(value, datetime) else value
