"""The CMLE simulation: deterministic per (seed, day), a stable population with consistent
conversions across days, the reference's funnel volumes and a known true propensity."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from propensity.events import ALL_EVENT_TYPE_NAMES, CONVERSION_EVENT, EVENT_TYPES
from propensity.simulation import (
    HISTORY_DAYS,
    event_schema,
    flatten,
    history_days,
    make_population,
    profiles_table,
    simulate_day,
    true_propensity,
)

from tests.propensity import TENANT, events_frame, simulate_history

START = date(2026, 1, 1)
END = START + timedelta(days=HISTORY_DAYS)

# Reference run (docs/reference-notes.md#the-reference-simulator), events per 100,000 users over ten weeks.
REFERENCE_COUNTS = {
    "directMarketing.emailSent": 500_970,
    "directMarketing.emailOpened": 198_474,
    "advertising.impressions": 100_246,
    "web.webpagedetails.pageViews": 99_389,
    "directMarketing.emailClicked": 42_431,
    "decisioning.propositionDisplay": 31_639,
    "commerce.productViews": 31_545,
    "web.webinteraction.linkClicks": 31_501,
    "advertising.clicks": 6_376,
    "decisioning.propositionDismiss": 2_554,
    "decisioning.propositionInteract": 2_540,
    "commerce.purchases": 2_538,
}


@pytest.fixture(scope="module")
def population():
    return make_population(seed=3, size=20_000, start=START)


@pytest.fixture(scope="module")
def history(population):
    return simulate_history(population, END, HISTORY_DAYS)


def test_a_day_is_deterministic_for_seed_and_date(population):
    day = START + timedelta(days=20)
    rebuilt = make_population(seed=3, size=20_000, start=START)
    assert simulate_day(rebuilt, day, tenant=TENANT).equals(simulate_day(population, day, tenant=TENANT))
    assert not simulate_day(population, day + timedelta(days=1)).equals(simulate_day(population, day))
    other_seed = make_population(seed=4, size=20_000, start=START)
    assert not simulate_day(other_seed, day)["_id"].equals(simulate_day(population, day)["_id"])


def test_a_day_alone_equals_the_same_day_in_a_history(population, history):
    """Generating only day D (no cached neighbours) gives exactly that day's rows of the history."""
    day = START + timedelta(days=45)
    alone = simulate_day(make_population(seed=3, size=20_000, start=START), day, tenant=TENANT)
    start = datetime.combine(day, datetime.min.time(), UTC)
    in_day = pc.and_(
        pc.greater_equal(history["timestamp"], start), pc.less(history["timestamp"], start + timedelta(days=1))
    )
    assert history.filter(in_day).equals(alone)


def test_days_are_utc_and_within_the_day(population):
    day = START + timedelta(days=10)
    table = simulate_day(population, day)
    assert table.schema.equals(event_schema(TENANT))
    assert table.schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    times = table["timestamp"].to_pandas()
    assert times.min() >= datetime.combine(day, datetime.min.time(), UTC)
    assert times.max() < datetime.combine(day + timedelta(days=1), datetime.min.time(), UTC)
    assert len(table["_id"].unique()) == table.num_rows
    assert set(table["eventType"].unique().to_pylist()) <= set(ALL_EVENT_TYPE_NAMES)


def test_nothing_happens_before_the_population_starts(population):
    assert simulate_day(population, START - timedelta(days=1)).num_rows == 0


def test_population_is_stable_and_well_formed(population):
    rebuilt = make_population(seed=3, size=20_000, start=START)
    profiles = profiles_table(population)
    assert profiles.equals(profiles_table(rebuilt))
    userids = profiles["userid"].to_pylist()
    assert len(set(userids)) == len(userids)
    assert all(len(userid) == 38 and userid.isdigit() for userid in userids[:1000])
    assert len(profiles["email"].unique()) == profiles.num_rows


def test_events_belong_to_the_population_and_carry_their_payloads(population, history):
    flat = flatten(history)
    assert set(pc.unique(flat[f"_{TENANT}.userid"]).to_pylist()) <= set(population.userid.to_pylist())
    is_email = pc.starts_with(flat["eventType"], "directMarketing.")
    assert pc.all(pc.is_valid(flat.filter(is_email)["directMarketing.emailVisitorID"])).as_py()
    assert pc.all(pc.is_null(flat.filter(is_email)["web.webPageDetails.URL"])).as_py()
    web = flat.filter(pc.invert(is_email))
    assert pc.all(pc.is_valid(web["web.webPageDetails.URL"])).as_py()
    assert pc.all(pc.is_null(web["directMarketing.messageID"])).as_py()
    sends = flat.filter(pc.equal(flat["eventType"], "directMarketing.emailSent"))
    opens = flat.filter(pc.equal(flat["eventType"], "directMarketing.emailOpened"))
    # Opens refer to an e-mail that was sent (children keep their parent's message).
    sent_ids = set(sends["directMarketing.messageID"].to_pylist())
    opened_ids = opens["directMarketing.messageID"].to_pylist()
    assert np.mean([message in sent_ids for message in opened_ids]) > 0.95


def test_funnel_volumes_follow_the_reference(population, history):
    """Children are appended, with rates calibrated so ten weeks give the reference's counts."""
    counts = events_frame(history).event_type.value_counts()
    scale = population.size / 100_000
    for event_type, reference in REFERENCE_COUNTS.items():
        expected = reference * scale
        assert abs(counts[event_type] - expected) < 0.1 * expected + 4 * np.sqrt(expected), event_type
    assert 0.9e6 * scale < counts.sum() < 1.2e6 * scale


def test_about_fifteen_percent_convert_once_in_ten_weeks(population, history):
    frame = events_frame(history)
    conversions = frame[frame.event_type == CONVERSION_EVENT]
    assert conversions.userid.is_unique, "a user converts at most once"
    assert len(conversions) / population.size == pytest.approx(0.15, abs=0.015)
    # Conversions land on the precomputed conversion times: the state is the same on every day.
    converted = population.conversion_us < int(datetime.combine(END, datetime.min.time(), UTC).timestamp() * 1e6)
    assert set(conversions.userid) == set(np.array(population.userid.to_pylist())[converted])


def test_true_propensity_is_calibrated_against_the_label_window(population, history):
    as_of, window = END - timedelta(days=14), 14
    truth = true_propensity(population, as_of, window)
    frame = events_frame(history)
    conversions = frame[frame.event_type == CONVERSION_EVENT]
    cutoff = np.datetime64(datetime.combine(as_of, datetime.min.time()), "us")
    converted_before = set(conversions.userid[conversions.event_time.dt.tz_localize(None) < cutoff])
    userids = np.array(population.userid.to_pylist())
    assert np.isnan(truth).sum() == len(converted_before)
    assert set(userids[np.isnan(truth)]) == converted_before
    in_window = len(conversions) - len(converted_before)
    assert np.nansum(truth) == pytest.approx(in_window, rel=0.1)
    with_truth = profiles_table(population, as_of=as_of, label_window_days=window)
    np.testing.assert_array_equal(with_truth["true_propensity"].to_numpy(zero_copy_only=False), truth)


def test_flatten_gives_dotted_leaves_and_null_children_of_null_parents(population):
    flat = flatten(simulate_day(population, START + timedelta(days=3)))
    assert not any(pa.types.is_struct(field.type) for field in flat.schema)
    assert {f"_{TENANT}.userid", "web.webPageDetails.pageViews.value", "directMarketing.sends.value"} <= set(
        flat.column_names
    )
    sent = pc.equal(flat["eventType"], "directMarketing.emailSent")
    assert pc.all(pc.is_null(flat.filter(sent)["web.webInteraction.linkClicks.value"])).as_py()
    assert pc.all(pc.equal(flat.filter(sent)["directMarketing.sends.value"], 1.0)).as_py()


def test_history_days_are_the_days_before_the_as_of_date():
    days = history_days(date(2026, 3, 12))
    assert len(days) == HISTORY_DAYS == 70
    assert days[0] == date(2026, 1, 1) and days[-1] == date(2026, 3, 11)
    assert len(EVENT_TYPES) == 12
