"""Synthetic CMLE experience events, one day at a time, for a stable population of profiles.

The reference simulator (docs/reference-notes.md) draws ten weeks per user in one go. Here every day
is generated on its own, deterministically from ``(seed, day)``, so the pipeline can seed a
history and then add one day per run without replaying the past:

- **Profiles** (ids, names, latent traits) come from ``seed`` alone. Each user has an *activity*
  (Gamma, mean 1) scaling their spontaneous events and an *intent* (log-normal, mean 1) scaling
  their engagement rates along the funnel (opens, clicks, product views, purchases...).
- **Events** of day D are the funnel cascades rooted on days D-7..D (children are appended, never
  overwritten, and may spill past midnight), each drawn from an RNG seeded by ``(seed, root day)``,
  kept where they fall inside day D. Cascade children more than a week after their root are dropped.
- **Conversions** (``web.formFilledOut``) follow a closed-form hazard, so the converted state on
  any day needs no history. The user's propensity is the reference's: ``0.001`` plus the propensity
  deltas of their events, here the deltas of their *expected* events with a 30-day memory::

      p(t) = P0 + S (1 - exp(-t / τ)),  S = τ Σ_type delta_type × expected daily count_type

  and, like the reference, every conversion-drawing event converts with probability ``p``, so the
  hazard is ``λ(t) = c × eligible events per day × p(t)``, with ``c`` solved so 15% of users
  convert in their first ten weeks, as in the reference. A user converts once, when the
  cumulative hazard ``H(t)`` crosses their own ``Exp(1)`` threshold drawn from the seed.
  Because events are independent of that threshold given the traits, the *true propensity*
  ``1 - exp(-(H(T + w) - H(T)))`` of a user not converted by T is the best any model can do.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from faker import Faker

from propensity.events import ALL_EVENT_TYPE_NAMES, CONVERSION_EVENT, EVENT_TYPES, REFERENCE_DAYS

log = logging.getLogger(__name__)

HISTORY_DAYS = REFERENCE_DAYS
"""Days of history seeded on the first run: the reference's ten weeks, enough for the training window."""

INITIAL_PROPENSITY = 0.001
MEMORY_DAYS = 30.0
"""τ: how long expected events keep raising the propensity."""
TARGET_CONVERSION_RATE = 0.15
"""Share of users converting in their first ten weeks (docs/reference-notes.md); ``c`` is solved to match it."""
ACTIVITY_SHAPE = 0.6
"""Gamma shape of activity (mean 1): skewed, so a few heavy users and many light ones."""
INTENT_SIGMA = 0.8
SPILLOVER_DAYS = 7
CONVERSION_HORIZON_DAYS = 3650.0
"""Users whose threshold is not crossed within ten years never convert."""
PRODUCED_BY = "aep-propensity-simulator"
SITE = "https://www.example.com"
PAGES = ("home", "pricing", "products", "blog", "support", "account", "subscribe")
SUBSCRIBE_PAGE = PAGES.index("subscribe")
INTERACTION_TYPES = ("download", "exit", "other")
REFERRERS = (
    ("https://www.google.com/", "search_engine"),
    ("https://mail.example.net/", "email"),
    ("https://www.facebook.com/", "social"),
    ("https://news.example.org/", "external"),
    (f"{SITE}/home", "internal"),
    ("", "typed_bookmarked"),
)
NAME_POOL_SIZE = 500

DAY_US = 86_400 * 1_000_000
HOUR_US = 3_600 * 1_000_000
EPOCH_DAY = date(1970, 1, 1)
NEVER_US = np.iinfo(np.int64).max

# Independent RNG streams, so adding a draw to one never shifts another.
STREAM_TRAITS, STREAM_IDS, STREAM_NAMES, STREAM_THRESHOLDS, STREAM_CASCADE, STREAM_DETAILS = range(6)

CONVERSION_KIND = len(EVENT_TYPES)
"""Index of ``web.formFilledOut`` in ``ALL_EVENT_TYPE_NAMES``."""
EVENT_INDEX = {name: index for index, name in enumerate(ALL_EVENT_TYPE_NAMES)}
IS_WEB = np.array([event.family == "web" for event in EVENT_TYPES] + [True])
LINK_CLICK = np.array([event.link_click for event in EVENT_TYPES] + [True])
EMAIL_SENT = EVENT_INDEX["directMarketing.emailSent"]
EMAIL_OPENED = EVENT_INDEX["directMarketing.emailOpened"]
EMAIL_CLICKED = EVENT_INDEX["directMarketing.emailClicked"]
assert ALL_EVENT_TYPE_NAMES[CONVERSION_KIND] == CONVERSION_EVENT


@dataclass(frozen=True, eq=False)
class Population:
    """A stable set of profiles and their latent state (hashable by identity, for the cascade cache).

    :param seed: the simulation seed.
    :param start: the first simulated day; nothing happens before it.
    :param userid: 38-digit ECID-like ids (``_{tenant}.userid``).
    :param email: e-mail addresses (``directMarketing.emailVisitorID``).
    :param hashed_email: SHA-256 of the e-mail (``directMarketing.hashedEmail``).
    :param first_name: first names.
    :param last_name: last names.
    :param base_daily: (users, types) mean spontaneous events per day.
    :param per_parent: (users, types) mean children per parent event.
    :param hazard_rate: ``c`` × expected conversion-drawing events per day.
    :param steady_propensity: ``S``, the propensity reached after long exposure (above ``P0``).
    :param conversion_us: conversion time, epoch microseconds (``NEVER_US`` when never).
    """

    seed: int
    start: date
    userid: pa.Array
    email: pa.Array
    hashed_email: pa.Array
    first_name: pa.Array
    last_name: pa.Array
    base_daily: np.ndarray
    per_parent: np.ndarray
    hazard_rate: np.ndarray
    steady_propensity: np.ndarray
    conversion_us: np.ndarray

    @property
    def size(self) -> int:
        return len(self.userid)


def make_population(seed: int, size: int, start: date) -> Population:
    """Draw ``size`` profiles and their traits; the same arguments always give the same population.

    :param seed: simulation seed.
    :param size: number of profiles (the reference uses 100,000).
    :param start: first simulated day. Keep it fixed for a dataset: conversions are timed from it.
    """
    traits = _rng(seed, STREAM_TRAITS)
    activity = traits.gamma(ACTIVITY_SHAPE, 1.0 / ACTIVITY_SHAPE, size)
    intent = traits.lognormal(-(INTENT_SIGMA**2) / 2, INTENT_SIGMA, size)
    base_daily, per_parent, expected_daily = _funnel_rates(activity, intent)
    deltas = np.array([event.propensity_delta for event in EVENT_TYPES])
    draws_conversion = np.array([event.draws_conversion for event in EVENT_TYPES])
    # Floor at -P0 so the propensity never goes negative (the reference clips p to [0, 1]).
    steady_propensity = np.maximum(MEMORY_DAYS * expected_daily @ deltas, -INITIAL_PROPENSITY)
    eligible_daily = expected_daily[:, draws_conversion].sum(axis=1)
    hazard_rate = _conversion_scale(eligible_daily, steady_propensity) * eligible_daily
    thresholds = _rng(seed, STREAM_THRESHOLDS).exponential(1.0, size)
    conversion_days = _conversion_days(hazard_rate, steady_propensity, thresholds)
    reachable = np.isfinite(conversion_days)
    conversion_us = np.full(size, NEVER_US, np.int64)
    conversion_us[reachable] = _day_start_us(start) + np.round(conversion_days[reachable] * DAY_US).astype(np.int64)
    userid = _ecids(_rng(seed, STREAM_IDS), size)
    first_name, last_name, email = _names(seed, size)
    hashed_email = [hashlib.sha256(address.encode()).hexdigest() for address in email.tolist()]
    return Population(
        seed=seed,
        start=start,
        userid=pa.array(userid),
        email=pa.array(email),
        hashed_email=pa.array(hashed_email),
        first_name=pa.array(first_name),
        last_name=pa.array(last_name),
        base_daily=base_daily,
        per_parent=per_parent,
        hazard_rate=hazard_rate,
        steady_propensity=steady_propensity,
        conversion_us=conversion_us,
    )


def history_days(as_of: date, days: int = HISTORY_DAYS) -> list[date]:
    """The ``days`` days before ``as_of``, oldest first: the history seeded on the first run.

    :param as_of: the run's as-of date (excluded).
    :param days: length of the history.
    """
    return [as_of - timedelta(days=offset) for offset in range(days, 0, -1)]


def simulate_day(population: Population, day: date, *, tenant: str = "acme") -> pa.Table:
    """All experience events of ``day`` (UTC), as nested XDM ExperienceEvent records.

    :param population: the profiles.
    :param day: the day to generate; the same (seed, day) always gives the same table.
    :param tenant: the tenant id; the user id goes to ``_{tenant}.userid``.
    """
    day_start, day_end = _day_start_us(day), _day_start_us(day) + DAY_US
    roots = [day - timedelta(days=back) for back in range(SPILLOVER_DAYS, -1, -1)]
    cascades = [_cascade(population, root) for root in roots if root >= population.start]
    users = np.concatenate([c[0] for c in cascades] + [np.empty(0, np.int64)])
    kinds = np.concatenate([c[1] for c in cascades] + [np.empty(0, np.int64)])
    times = np.concatenate([c[2] for c in cascades] + [np.empty(0, np.int64)])
    messages = np.concatenate([c[3] for c in cascades] + [np.empty(0, np.int64)])
    in_day = (times >= day_start) & (times < day_end)
    converting = np.flatnonzero((population.conversion_us >= day_start) & (population.conversion_us < day_end))
    users = np.concatenate([users[in_day], converting])
    kinds = np.concatenate([kinds[in_day], np.full(converting.size, CONVERSION_KIND)])
    times = np.concatenate([times[in_day], population.conversion_us[converting]])
    messages = np.concatenate([messages[in_day], np.full(converting.size, -1)])
    order = np.lexsort((kinds, users, times))
    table = _event_table(
        population,
        tenant,
        _rng(population.seed, STREAM_DETAILS, day),
        users[order],
        kinds[order],
        times[order],
        messages[order],
    )
    log.debug("simulated %s: %s events, %s conversions", day, table.num_rows, converting.size)
    return table


def true_propensity(population: Population, as_of: date, label_window_days: int) -> np.ndarray:
    """Each user's probability of converting in ``[as_of, as_of + label_window_days)``.

    Given everything up to the cut-off, this is the best achievable score. NaN for users who
    converted before ``as_of`` (they are not in the training or scoring population).

    :param population: the profiles.
    :param as_of: the cut-off date T.
    :param label_window_days: length of the label window.
    """
    elapsed = (as_of - population.start).days
    window_hazard = _cumulative_hazard(
        population.hazard_rate, population.steady_propensity, elapsed + label_window_days
    )
    window_hazard -= _cumulative_hazard(population.hazard_rate, population.steady_propensity, elapsed)
    converted_before = population.conversion_us < _day_start_us(as_of)
    return np.where(converted_before, np.nan, -np.expm1(-window_hazard))


def profiles_table(
    population: Population, *, as_of: date | None = None, label_window_days: int | None = None
) -> pa.Table:
    """One row per profile: ``userid, email, first_name, last_name`` and, when asked, ``true_propensity``.

    :param population: the profiles.
    :param as_of: cut-off for the true propensity (with ``label_window_days``), or None for none.
    :param label_window_days: label window for the true propensity.
    """
    columns = {
        "userid": population.userid,
        "email": population.email,
        "first_name": population.first_name,
        "last_name": population.last_name,
    }
    if as_of is not None:
        if label_window_days is None:
            raise ValueError("true_propensity needs label_window_days with as_of")
        columns["true_propensity"] = pa.array(true_propensity(population, as_of, label_window_days), from_pandas=True)
    return pa.table(columns)


def flatten(table: pa.Table) -> pa.Table:
    """Nested structs to dotted leaf columns (``web.webPageDetails.URL``): the emulator's PostgreSQL layout.

    :param table: a table with struct columns; a null struct gives null leaves.
    """
    while any(pa.types.is_struct(field.type) for field in table.schema):
        table = table.flatten()
    return table


def event_schema(tenant: str) -> pa.Schema:
    """The XDM ExperienceEvent shape produced by ``simulate_day`` (nested, for Parquet batch ingestion).

    :param tenant: the tenant id.
    """
    measure = pa.struct([("value", pa.float64())])
    web = pa.struct(
        [
            ("webPageDetails", pa.struct([("URL", pa.string()), ("name", pa.string()), ("pageViews", measure)])),
            (
                "webInteraction",
                pa.struct(
                    [("URL", pa.string()), ("name", pa.string()), ("type", pa.string()), ("linkClicks", measure)]
                ),
            ),
            ("webReferrer", pa.struct([("URL", pa.string()), ("type", pa.string())])),
        ]
    )
    direct_marketing = pa.struct(
        [
            ("emailDelivered", measure),
            ("sends", measure),
            ("opens", measure),
            ("clicks", measure),
            ("offerOpens", measure),
            ("emailVisitorID", pa.string()),
            ("hashedEmail", pa.string()),
            ("messageID", pa.string()),
        ]
    )
    return pa.schema(
        [
            ("_id", pa.string()),
            ("timestamp", pa.timestamp("us", tz="UTC")),
            ("eventType", pa.string()),
            ("producedBy", pa.string()),
            (f"_{tenant}", pa.struct([("userid", pa.string())])),
            ("web", web),
            ("directMarketing", direct_marketing),
        ]
    )


def _rng(seed: int, stream: int, day: date | None = None) -> np.random.Generator:
    key = [seed, stream] if day is None else [seed, stream, day.toordinal()]
    return np.random.default_rng(np.random.SeedSequence(key))


def _day_start_us(day: date) -> int:
    return (day - EPOCH_DAY).days * DAY_US


def _funnel_rates(activity: np.ndarray, intent: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-user funnel rates: spontaneous events per day, children per parent, expected events per day.

    :param activity: per-user activity (scales spontaneous events).
    :param intent: per-user intent (scales per-parent rates by ``intent**elasticity``).
    """
    return _funnel(activity, intent, _intent_normalizers())


def _funnel(
    activity: np.ndarray, intent: np.ndarray, normalizers: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    size, kinds = len(activity), len(EVENT_TYPES)
    base_daily, per_parent, expected_daily = (np.zeros((size, kinds)) for _ in range(3))
    for index, event in enumerate(EVENT_TYPES):
        base_daily[:, index] = activity * event.base_per_user / REFERENCE_DAYS
        expected_daily[:, index] = base_daily[:, index]
        if event.parent is not None:
            per_parent[:, index] = event.per_parent * normalizers[index] * intent**event.intent_elasticity
            expected_daily[:, index] += expected_daily[:, EVENT_INDEX[event.parent]] * per_parent[:, index]
    return base_daily, per_parent, expected_daily


@functools.cache
def _intent_normalizers() -> np.ndarray:
    """Per event type, the factor that keeps the population's children per parent at the reference ratio.

    Intent compounds along the funnel (high-intent users open more *and* click more per open), so
    a stage's population ratio is not the mean of its own factor. Gauss-Hermite quadrature over
    the log-normal intent gives each stage's exact population mean, stage after stage.
    """
    nodes, weights = np.polynomial.hermite_e.hermegauss(64)
    intent = np.exp(-(INTENT_SIGMA**2) / 2 + INTENT_SIGMA * nodes)
    weights = weights / weights.sum()
    normalizers = np.ones(len(EVENT_TYPES))
    for index, event in enumerate(EVENT_TYPES):
        if event.parent is not None:
            # Earlier stages are final by now; this stage only depends on them.
            parents = _funnel(np.ones_like(intent), intent, normalizers)[2][:, EVENT_INDEX[event.parent]]
            normalizers[index] = (weights @ parents) / (weights @ (parents * intent**event.intent_elasticity))
    return normalizers


def _cumulative_hazard(hazard_rate: np.ndarray, steady: np.ndarray, days: float) -> np.ndarray:
    """``H(t) = ∫₀ᵗ c r p(s) ds`` with ``p(s) = P0 + S (1 - exp(-s/τ))``; 0 before the start."""
    elapsed = np.maximum(days, 0.0)
    integral = (INITIAL_PROPENSITY + steady) * elapsed - steady * MEMORY_DAYS * -np.expm1(-elapsed / MEMORY_DAYS)
    return hazard_rate * integral


def _conversion_scale(eligible_daily: np.ndarray, steady: np.ndarray) -> float:
    """``c`` such that the expected share of users converting within ``REFERENCE_DAYS`` is the target.

    The share ``mean(1 - exp(-c H₁(70)))`` grows with ``c``: bisect on ``log c``.
    """
    unit_hazard = _cumulative_hazard(eligible_daily, steady, REFERENCE_DAYS)
    low, high = -10.0, 10.0
    for _ in range(60):
        middle = (low + high) / 2
        if np.mean(-np.expm1(-np.exp(middle) * unit_hazard)) < TARGET_CONVERSION_RATE:
            low = middle
        else:
            high = middle
    return float(np.exp(high))


def _conversion_days(hazard_rate: np.ndarray, steady: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Days from the start until ``H`` crosses each threshold (inf if beyond the horizon), by bisection."""
    low = np.zeros_like(thresholds)
    high = np.full_like(thresholds, CONVERSION_HORIZON_DAYS)
    # 50 halvings of ten years: well under a microsecond.
    for _ in range(50):
        middle = (low + high) / 2
        crossed = _cumulative_hazard(hazard_rate, steady, middle) >= thresholds
        high = np.where(crossed, middle, high)
        low = np.where(crossed, low, middle)
    reachable = _cumulative_hazard(hazard_rate, steady, CONVERSION_HORIZON_DAYS) >= thresholds
    return np.where(reachable, high, np.inf)


def _ecids(rng: np.random.Generator, size: int) -> np.ndarray:
    """38-digit ECID-like ids: two zero-padded 19-digit halves, as the reference's ECID layout."""
    halves = [np.char.zfill(rng.integers(0, 10**19, size, dtype=np.uint64).astype(str), 19) for _ in range(2)]
    return np.char.add(*halves)


def _names(seed: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First names, last names and unique e-mails, drawn from small Faker pools."""
    faker = Faker("en_US")
    faker.seed_instance(seed)
    first_pool = np.array([faker.first_name() for _ in range(NAME_POOL_SIZE)])
    last_pool = np.array([faker.last_name() for _ in range(NAME_POOL_SIZE)])
    rng = _rng(seed, STREAM_NAMES)
    first_name = first_pool[rng.integers(0, NAME_POOL_SIZE, size)]
    last_name = last_pool[rng.integers(0, NAME_POOL_SIZE, size)]
    # The row number keeps addresses unique; letters only in the local part.
    local = np.char.lower(np.char.add(np.char.add(first_name, "."), last_name))
    local = np.char.replace(np.char.replace(local, "'", ""), " ", "")
    email = np.char.add(np.char.add(local, np.arange(size).astype(str)), "@example.com")
    return first_name, last_name, email


@functools.lru_cache(maxsize=SPILLOVER_DAYS + 1)
def _cascade(population: Population, root_day: date) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The funnel events rooted on ``root_day`` (spontaneous events and all their descendants).

    Cached: consecutive days share all but one of their cascades.

    :return: ``(user, kind, time_us, message)`` arrays; message is the e-mail send id, -1 for none.
    """
    rng = _rng(population.seed, STREAM_CASCADE, root_day)
    day_start = _day_start_us(root_day)
    everyone = np.arange(population.size)
    by_kind: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for index, event in enumerate(EVENT_TYPES):
        users, times, messages = [np.empty(0, np.int64)], [np.empty(0, np.int64)], [np.empty(0, np.int64)]
        if event.base_per_user:
            spontaneous = np.repeat(everyone, rng.poisson(population.base_daily[:, index]))
            users.append(spontaneous)
            times.append(day_start + rng.integers(0, DAY_US, spontaneous.size))
            # Each e-mail send is a message its opens and clicks refer to.
            sends = root_day.toordinal() * 10**7 + np.arange(spontaneous.size) if index == EMAIL_SENT else -1
            messages.append(np.broadcast_to(sends, spontaneous.shape).astype(np.int64))
        if event.parent is not None:
            parent_users, parent_times, parent_messages = by_kind[EVENT_INDEX[event.parent]]
            counts = rng.poisson(population.per_parent[parent_users, index])
            children = np.repeat(parent_users, counts)
            users.append(children)
            delays = rng.exponential(event.mean_hours * HOUR_US, children.size).astype(np.int64)
            times.append(np.repeat(parent_times, counts) + delays)
            messages.append(np.repeat(parent_messages, counts))
        by_kind[index] = (np.concatenate(users), np.concatenate(times), np.concatenate(messages))
    user, time_us, message = (np.concatenate([arrays[part] for arrays in by_kind.values()]) for part in range(3))
    kind = np.repeat(np.arange(len(EVENT_TYPES)), [len(arrays[0]) for arrays in by_kind.values()])
    return user, kind, time_us, message


def _event_table(
    population: Population,
    tenant: str,
    rng: np.random.Generator,
    users: np.ndarray,
    kinds: np.ndarray,
    times: np.ndarray,
    messages: np.ndarray,
) -> pa.Table:
    """Assemble the nested XDM records for the day's events (already in output order)."""
    size = len(users)
    user_index = pa.array(users, pa.int64())
    is_web = IS_WEB[kinds]
    # Deterministic 128-bit hex ids from the day's RNG.
    ids = np.frombuffer(rng.bytes(16 * size).hex().encode(), dtype="S32").astype(str)
    pages = np.where(kinds == CONVERSION_KIND, SUBSCRIBE_PAGE, rng.integers(0, len(PAGES), size))
    page_urls = pa.array([f"{SITE}/{page}" for page in PAGES]).take(pa.array(pages))
    page_names = pa.array(list(PAGES)).take(pa.array(pages))
    interaction = rng.integers(0, len(INTERACTION_TYPES), size)
    link_urls = pa.array([f"{SITE}/{page}" for page in PAGES]).take(pa.array(rng.integers(0, len(PAGES), size)))
    referrer = pa.array(rng.integers(0, len(REFERRERS), size))
    web = _struct(
        {
            "webPageDetails": _struct({"URL": page_urls, "name": page_names, "pageViews": _measure(np.ones(size))}),
            "webInteraction": _struct(
                {
                    "URL": link_urls,
                    "name": pc.binary_join_element_wise("link", page_names, ":"),
                    "type": pa.array(list(INTERACTION_TYPES)).take(pa.array(interaction)),
                    "linkClicks": _measure(LINK_CLICK[kinds].astype(float)),
                }
            ),
            "webReferrer": _struct(
                {
                    "URL": pa.array([url for url, _ in REFERRERS]).take(referrer),
                    "type": pa.array([kind for _, kind in REFERRERS]).take(referrer),
                }
            ),
        },
        null=~is_web,
    )
    sent, opened, clicked = kinds == EMAIL_SENT, kinds == EMAIL_OPENED, kinds == EMAIL_CLICKED
    message_ids = pc.binary_join_element_wise("msg", pa.array(messages).cast(pa.string()), "-")
    direct_marketing = _struct(
        {
            "emailDelivered": _measure(np.ones(size), null=~sent),
            "sends": _measure(np.ones(size), null=~sent),
            "opens": _measure(np.ones(size), null=~opened),
            "clicks": _measure(np.ones(size), null=~clicked),
            "offerOpens": _measure(np.ones(size), null=~(opened | clicked)),
            "emailVisitorID": population.email.take(user_index),
            "hashedEmail": pc.if_else(pa.array(sent), population.hashed_email.take(user_index), None),
            "messageID": message_ids,
        },
        null=is_web,
    )
    columns = [
        pa.array(ids, pa.string()),
        pa.array(times, pa.timestamp("us", tz="UTC")),
        pa.array(list(ALL_EVENT_TYPE_NAMES)).take(pa.array(kinds)),
        pa.array(np.full(size, PRODUCED_BY)),
        _struct({"userid": population.userid.take(user_index)}),
        web,
        direct_marketing,
    ]
    return pa.Table.from_arrays(columns, schema=event_schema(tenant))


def _struct(fields: dict[str, pa.Array], null: np.ndarray | None = None) -> pa.StructArray:
    mask = None if null is None else pa.array(null, pa.bool_())
    return pa.StructArray.from_arrays(list(fields.values()), names=list(fields), mask=mask)


def _measure(values: np.ndarray, null: np.ndarray | None = None) -> pa.StructArray:
    """An XDM measure ``{value}``."""
    return _struct({"value": pa.array(values, pa.float64())}, null)
