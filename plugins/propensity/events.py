"""The one list of event types: the CMLE funnel, its parameters and the features built on it.

Everything that names an event type (the simulator, the featurization and EDA SQL, data-quality
checks) reads it from here, so a misspelt type cannot silently produce an all-NULL feature
(docs/reference-notes.md#m4, #m5).

The funnel is the reference's (``SimulationHelpers.py``, docs/reference-notes.md). Its child rates
are re-calibrated: the reference *overwrites* a parent's children with the last parent's, so its
per-parent λ (e.g. 2.0 opens per send) only shows up once per user. The simulator appends children
(docs/reference-notes.md#m14), so each per-parent rate here is the ratio the reference actually produced
(e.g. 198,474 opens / 500,970 sends = 0.396), which keeps the reference's funnel volumes.
"""

from __future__ import annotations

from dataclasses import dataclass

REFERENCE_DAYS = 70
"""The reference simulates ten weeks; its base λ are counts per user over that window."""


@dataclass(frozen=True)
class EventType:
    """One ``eventType`` of the funnel.

    :param name: the XDM ``eventType`` value.
    :param slug: the short name used in feature column names.
    :param family: the XDM object the event fills: ``"web"`` or ``"directMarketing"``.
    :param base_per_user: reference λ of spontaneous events per user over ``REFERENCE_DAYS`` (0: child only).
    :param parent: the event type that triggers this one, or None.
    :param per_parent: mean number of these events per parent event.
    :param mean_hours: mean delay (exponential) after the parent event.
    :param propensity_delta: the reference's change in subscription propensity per event.
    :param draws_conversion: whether the reference draws a conversion on this event.
    :param intent_elasticity: how the per-parent rate scales with the user's latent intent
        (``rate × intent**elasticity``): positive for engagement, negative for rejection.
    :param link_click: whether the event's ``web.webInteraction.linkClicks.value`` is 1.
    """

    name: str
    slug: str
    family: str
    base_per_user: float
    parent: str | None
    per_parent: float
    mean_hours: float
    propensity_delta: float
    draws_conversion: bool
    intent_elasticity: float
    link_click: bool


# In dependency order: a parent always comes before its children.
# fmt: off
EVENT_TYPES: tuple[EventType, ...] = (
    #         name                               slug                    family             base  parent                            per_parent hours  delta  conversion intent link_click
    EventType("advertising.impressions",         "ad_impressions",        "web",             1.0,  None,                             0.0,     0.0,  0.001, False,     0.0,   False),
    EventType("advertising.clicks",              "ad_clicks",             "web",             0.0,  "advertising.impressions",        0.0636,  0.5,  0.002, False,     0.5,   True),
    EventType("directMarketing.emailSent",       "email_sent",            "directMarketing", 5.0,  None,                             0.0,     0.0,  0.005, False,     0.0,   False),
    EventType("directMarketing.emailOpened",     "email_opened",          "directMarketing", 0.0,  "directMarketing.emailSent",      0.396,   24.0, 0.02,  False,     1.0,   False),
    EventType("directMarketing.emailClicked",    "email_clicked",         "directMarketing", 0.0,  "directMarketing.emailOpened",    0.214,   0.5,  0.1,   False,     1.0,   False),
    # Page views are both spontaneous (0.57 per user) and the landing of an e-mail click (1 per
    # click): together the reference's ~1 per user.
    EventType("web.webpagedetails.pageViews",    "page_views",            "web",             0.57, "directMarketing.emailClicked",   1.0,     0.1,  0.005, True,      0.0,   False),
    EventType("web.webinteraction.linkClicks",   "link_clicks",           "web",             0.0,  "web.webpagedetails.pageViews",   0.317,   0.1,  0.005, True,      0.5,   True),
    EventType("commerce.productViews",           "product_views",         "web",             0.0,  "web.webpagedetails.pageViews",   0.317,   0.2,  0.005, True,      0.5,   False),
    EventType("commerce.purchases",              "purchases",             "web",             0.0,  "commerce.productViews",          0.080,   1.0,  0.1,   True,      0.5,   True),
    EventType("decisioning.propositionDisplay",  "proposition_displays",  "web",             0.0,  "web.webpagedetails.pageViews",   0.318,   0.1,  0.005, True,      0.0,   False),
    EventType("decisioning.propositionInteract", "proposition_interacts", "web",             0.0,  "decisioning.propositionDisplay", 0.080,   0.05, 0.1,   True,      0.5,   True),
    EventType("decisioning.propositionDismiss",  "proposition_dismisses", "web",             0.0,  "decisioning.propositionDisplay", 0.081,   0.05, -0.2,  True,      -0.5,  True),
)
# fmt: on

CONVERSION_EVENT = "web.formFilledOut"
"""The label: a subscription. Emitted by a conversion, never by the funnel."""

EVENT_TYPE_NAMES: tuple[str, ...] = tuple(event.name for event in EVENT_TYPES)
ALL_EVENT_TYPE_NAMES: tuple[str, ...] = (*EVENT_TYPE_NAMES, CONVERSION_EVENT)
"""Every ``eventType`` the dataset may hold, in funnel order (EDA funnel, data-quality checks)."""

FEATURE_EVENT_TYPES: tuple[EventType, ...] = EVENT_TYPES
"""The event types features are computed for: every funnel event, never the label itself."""

TEMPLATE_PARAMS: dict[str, object] = {
    "conversion_event": CONVERSION_EVENT,
    "feature_events": [{"event_type": event.name, "slug": event.slug} for event in FEATURE_EVENT_TYPES],
    "event_types": list(ALL_EVENT_TYPE_NAMES),
}
"""The event constants the SQL templates read from ``params`` (merge into every SQL task's params)."""
