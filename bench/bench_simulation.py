"""CMLE-scale check of the simulator: speed, volumes, conversion share, and model vs ceiling.

Run: ``.venv/bin/python bench/bench_simulation.py [--users 100000]`` from the repository root.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "plugins")]

from propensity.events import CONVERSION_EVENT  # noqa: E402
from propensity.model import train  # noqa: E402
from propensity.simulation import HISTORY_DAYS, history_days, make_population, simulate_day, true_propensity  # noqa: E402

from tests.propensity import events_frame, expected_features  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--label-window-days", type=int, default=14)
    args = parser.parse_args()
    run_date = date(2026, 3, 12)
    days = history_days(run_date, HISTORY_DAYS)

    started = time.perf_counter()
    population = make_population(args.seed, args.users, days[0])
    population_seconds = time.perf_counter() - started
    started = time.perf_counter()
    tables = [simulate_day(population, day) for day in days]
    history_seconds = time.perf_counter() - started
    started = time.perf_counter()
    simulate_day(make_population(args.seed, args.users, days[0]), run_date)
    one_day_seconds = time.perf_counter() - started
    events = events_frame(pa.concat_tables(tables))
    converters = events.userid[events.event_type == CONVERSION_EVENT].nunique()
    print(
        f"population: {population_seconds:.2f} s; {HISTORY_DAYS} days: {history_seconds:.2f} s; "
        f"one day with a fresh population: {one_day_seconds:.2f} s"
    )
    print(f"events: {len(events):,}; users converting in ten weeks: {converters / args.users:.1%}")
    print(events.event_type.value_counts().to_string())

    as_of = run_date - timedelta(days=args.label_window_days)
    features = expected_features(events, as_of, [7, 30, 90], args.label_window_days)
    truth = pd.Series(true_propensity(population, as_of, args.label_window_days), index=population.userid.to_pylist())
    features = features.assign(true_propensity=truth.reindex(features.index)).reset_index()
    metrics = train(features, seed=0, true_propensity_col="true_propensity").metrics
    print({key: value for key, value in metrics.items() if key != "features"})


if __name__ == "__main__":
    main()
