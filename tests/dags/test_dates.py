"""resolve_as_of_date: one rule for scheduled, backfill and manual runs."""

from datetime import UTC, date, datetime
from types import SimpleNamespace

import pytest
from propensity.dates import resolve_as_of_date

UTC = UTC


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        pytest.param(
            {
                "params": {},
                "data_interval_start": datetime(2026, 3, 1, 2, tzinfo=UTC),
                "data_interval_end": datetime(2026, 3, 2, 2, tzinfo=UTC),
                "logical_date": datetime(2026, 3, 1, 2, tzinfo=UTC),
            },
            date(2026, 3, 2),
            id="scheduled-uses-interval-end",
        ),
        pytest.param(
            {
                "params": {"as_of_date": "2026-01-15"},
                "data_interval_start": datetime(2026, 3, 1, tzinfo=UTC),
                "data_interval_end": datetime(2026, 3, 2, tzinfo=UTC),
            },
            date(2026, 1, 15),
            id="param-wins",
        ),
        pytest.param(
            {
                "params": {},
                "data_interval_start": datetime(2026, 3, 1, tzinfo=UTC),
                "data_interval_end": datetime(2026, 3, 1, tzinfo=UTC),
                "logical_date": datetime(2026, 3, 1, 5, tzinfo=UTC),
            },
            date(2026, 3, 1),
            id="zero-width-interval-falls-back-to-logical-date",
        ),
        pytest.param(
            {
                "params": {"as_of_date": None},
                "logical_date": None,
                "dag_run": SimpleNamespace(run_after=datetime(2026, 4, 10, 9, tzinfo=UTC)),
            },
            date(2026, 4, 9),
            id="manual-without-logical-date",
        ),
    ],
)
def test_resolve_as_of_date(context, expected):
    assert resolve_as_of_date(context) == expected


def test_unresolvable_run_is_an_error():
    with pytest.raises(ValueError, match="as-of date"):
        resolve_as_of_date({"params": {}, "dag_run": SimpleNamespace(run_after=None)})
