"""Shared helpers for the propensity tests: simulated histories and a pandas reference featurization."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pyarrow as pa
from propensity.events import CONVERSION_EVENT, FEATURE_EVENT_TYPES
from propensity.simulation import Population, flatten, history_days, simulate_day

TENANT = "acme"


def simulate_history(population: Population, end: date, days: int) -> pa.Table:
    """The ``days`` days of events before ``end``, nested, oldest first.

    :param population: the profiles.
    :param end: first day not simulated.
    :param days: number of days.
    """
    return pa.concat_tables([simulate_day(population, day, tenant=TENANT) for day in history_days(end, days)])


def events_frame(events: pa.Table) -> pd.DataFrame:
    """``userid, event_type, event_time`` from a nested events table.

    :param events: simulated events.
    """
    flat = flatten(events)
    return pd.DataFrame(
        {
            "userid": flat[f"_{TENANT}.userid"].to_numpy(),
            "event_type": flat["eventType"].to_numpy(),
            "event_time": flat["timestamp"].to_pandas(),
        }
    )


def expected_features(
    events: pd.DataFrame, as_of: date, lookback_days: list[int], label_window_days: int
) -> pd.DataFrame:
    """What ``featurize.sql`` should produce, recomputed with pandas, indexed by userid (sorted).

    :param events: ``events_frame`` output.
    :param as_of: the cut-off T.
    :param lookback_days: lookback windows in days.
    :param label_window_days: label window in days.
    """
    cutoff = pd.Timestamp(as_of, tz="UTC")
    before = events[events.event_time < cutoff]
    converted = set(before.userid[before.event_type == CONVERSION_EVENT])
    window = before[before.event_time >= cutoff - pd.Timedelta(days=max(lookback_days))]
    users = pd.Index(sorted(set(window.userid) - converted), name="userid")
    columns = {}
    for event in FEATURE_EVENT_TYPES:
        of_type = window[window.event_type == event.name]
        for days in lookback_days:
            recent = of_type[of_type.event_time >= cutoff - pd.Timedelta(days=days)]
            columns[f"cnt_{event.slug}_{days}d"] = recent.groupby("userid").size().reindex(users, fill_value=0)
        last = of_type.groupby("userid").event_time.max().reindex(users)
        columns[f"days_since_{event.slug}"] = (cutoff - last).dt.total_seconds() / 86400
        columns[f"has_{event.slug}"] = last.notna().astype(int)
    label_end = cutoff + pd.Timedelta(days=label_window_days)
    in_window = events[(events.event_time >= cutoff) & (events.event_time < label_end)]
    converters = set(in_window.userid[in_window.event_type == CONVERSION_EVENT])
    columns["label"] = pd.Series(users.isin(list(converters)).astype(int), index=users)
    return pd.DataFrame(columns)
