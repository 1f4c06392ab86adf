"""Query Service SQL in the shapes Adobe documents and Adobe's CMLE notebooks use, for the conformance suite.

Each case is written for this suite (none is copied): the constructs, AEP extensions and query
shapes are those of the source it names, over the simulator's nested XDM events. ``{table}`` is the
events dataset's table, ``{tenant}`` the tenant id. A case runs unchanged on the emulator; on Spark
it runs as written, or, when it uses an AEP-only extension, as ``spark_sql``: the same question in
plain Spark SQL, so the extension's result is checked against what it documents.

Sources:
- CMLE W1: Adobe's CMLE notebooks, ``notebooks/assignments/Week1Notebook.ipynb`` (exploratory data analysis)
- CMLE W2: ``notebooks/assignments/Week2Notebook.ipynb`` (labels, featurization, incremental CTAS, templates)
- QS SQL: AEP Query Service docs, "SQL syntax" (SNAPSHOT clause, anonymous blocks, CTAS/INSERT INTO)
- QS Spark: AEP Query Service docs, "Spark SQL functions" and "Adobe-defined functions"
- QS guide: AEP Query Service docs, "Query examples" / "Datasets exploration" (struct access, dates)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    """One statement of the corpus.

    :param id: test id.
    :param source: where its shape comes from (see the module docstring).
    :param sql: the Query Service SQL.
    :param spark_sql: plain Spark SQL with the same result, for a case using an AEP-only extension.
    :param ordered: compare the rows in order (the SQL orders them completely).
    :param compare: ``rows`` (every value) or ``count`` (row count and columns: the SQL draws at random).
    :param result_table: after the statement, compare this table's rows (a CTAS).
    """

    id: str
    source: str
    sql: str
    spark_sql: str | None = None
    ordered: bool = False
    compare: str = "rows"
    result_table: str | None = None


_EVENT_COUNTS = """
    SELECT _{tenant}.userid AS userID,
           SUM(CASE WHEN eventType = 'web.formFilledOut' THEN 1 ELSE 0 END) AS webFormsFilled,
           SUM(CASE WHEN eventType = 'directMarketing.emailOpened' THEN 1 ELSE 0 END) AS emailOpens,
           SUM(CASE WHEN eventType = 'directMarketing.emailClicked' THEN 1 ELSE 0 END) AS emailClicks,
           SUM(CASE WHEN eventType = 'web.webpagedetails.pageViews' THEN 1 ELSE 0 END) AS webPageViews
    FROM {table}
    GROUP BY userId
"""

_FEATURES = """
    SELECT _{tenant}.userid AS userId,
           eventType,
           timestamp,
           SUM(CASE WHEN eventType = 'web.formFilledOut' THEN 1 ELSE 0 END)
               OVER (PARTITION BY _{tenant}.userid) AS "subscriptionOccurred",
           SUM(CASE WHEN eventType = 'directMarketing.emailOpened' THEN 1 ELSE 0 END)
               OVER (PARTITION BY _{tenant}.userid ORDER BY timestamp, _id
                     ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS "emailsOpened",
           {minutes_since_open}
               AS "minutes_since_emailOpened"
    FROM {source}
"""

_TBPM = (
    "TIME_BETWEEN_PREVIOUS_MATCH(timestamp, eventType = 'directMarketing.emailOpened', 'minutes')"
    " OVER (PARTITION BY _{tenant}.userid ORDER BY timestamp, _id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)"
)
# What TIME_BETWEEN_PREVIOUS_MATCH documents, in plain Spark: minutes since the latest matching row
# of the frame (this one included), NULL before the first.
_TBPM_SPARK = (
    "(unix_micros(timestamp) - unix_micros(MAX(CASE WHEN eventType = 'directMarketing.emailOpened' THEN timestamp END)"
    " OVER (PARTITION BY _{tenant}.userid ORDER BY timestamp, _id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)))"
    " / 60000000.0"
)


def _features(source: str, *, spark: bool) -> str:
    return _FEATURES.replace("{minutes_since_open}", _TBPM_SPARK if spark else _TBPM).replace("{source}", source)


CASES: list[Case] = [
    # --- CMLE week 1: exploratory data analysis -----------------------------------------------
    Case(
        "sample_rows",
        "CMLE W1: first rows of the events dataset",
        "SELECT * FROM {table} ORDER BY _id LIMIT 5",
        ordered=True,
    ),
    Case(
        "struct_columns",
        "CMLE W1: a field group selected whole (a struct)",
        "SELECT directMarketing, _id, eventType, timestamp FROM {table} ORDER BY _id LIMIT 20",
        ordered=True,
    ),
    Case(
        "auto_to_json",
        "CMLE W1: SET auto_to_json, then structs as JSON",
        "SET auto_to_json=true;\nSELECT web, _id FROM {table} WHERE eventType LIKE 'web.%' ORDER BY _id LIMIT 20",
        ordered=True,
    ),
    Case(
        "basic_statistics",
        "CMLE W1: total rows and distinct ids, quoted aliases",
        'SELECT COUNT(_id) AS "totalRows", COUNT(DISTINCT _id) AS "distinctUsers" FROM {table}',
    ),
    Case("count_star", "CMLE W1: count(*) of the dataset", "SELECT count(*) AS cnt FROM {table}"),
    Case(
        "funnel",
        "CMLE W1: events and distinct users per eventType (mixed-case names unquoted)",
        'SELECT eventType, COUNT(DISTINCT _{tenant}.userid) AS "distinctUsers", COUNT(_id) AS "distinctEvents"'
        " FROM {table} GROUP BY eventType ORDER BY distinctUsers DESC",
    ),
    Case(
        "event_correlation",
        "CMLE W1: self-join on the tenant id, a subquery in FROM without alias",
        """SELECT eventType_First, eventType_Later, COUNT(DISTINCT userId) AS "distinctUsers"
FROM (
    SELECT a.eventType AS eventType_First, b.eventType AS eventType_Later, a._{tenant}.userid AS userID
    FROM {table} a
    JOIN {table} b ON a._{tenant}.userid = b._{tenant}.userid
    WHERE a.timestamp <= b.timestamp AND a.eventType LIKE 'directMarketing.%'
)
GROUP BY eventType_First, eventType_Later
ORDER BY distinctUsers DESC""",
    ),
    Case(
        "correlations",
        "CMLE W1: per-user event counts, then sums and corr() over them",
        f"""SELECT SUM(webFormsFilled) AS webFormsFilled_totalUsers,
       SUM(emailOpens) AS emailOpens_totalUsers,
       corr(webFormsFilled, emailOpens) AS webForms_emailOpens,
       corr(webFormsFilled, webPageViews) AS webForms_webPageViews,
       corr(webFormsFilled, emailClicks) AS webForms_emailClicks
FROM ({_EVENT_COUNTS})""",
    ),
    # --- CMLE week 2: labels and features --------------------------------------------------------
    Case(
        "positive_labels",
        "CMLE W2: users who subscribed, a window SUM over the user",
        """SELECT * FROM (
    SELECT eventType, _{tenant}.userid AS userId,
           SUM(CASE WHEN eventType = 'web.formFilledOut' THEN 1 ELSE 0 END)
               OVER (PARTITION BY _{tenant}.userid) AS "subscriptionOccurred"
    FROM {table}
)
WHERE subscriptionOccurred = 1 AND eventType = 'web.formFilledOut'""",
    ),
    Case(
        "negative_labels",
        "CMLE W2: one random event per non-subscriber, row_number() ordered by randn()",
        """SELECT * FROM (
    SELECT _{tenant}.userid AS userId,
           SUM(CASE WHEN eventType = 'web.formFilledOut' THEN 1 ELSE 0 END)
               OVER (PARTITION BY _{tenant}.userid) AS "subscriptionOccurred",
           row_number() OVER (PARTITION BY _{tenant}.userid ORDER BY randn()) AS random_row_number_for_user
    FROM {table}
)
WHERE subscriptionOccurred = 0 AND random_row_number_for_user = 1""",
        compare="count",
    ),
    Case(
        "cumulative_features",
        "CMLE W2: running counts per user (ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)",
        """SELECT _{tenant}.userid AS userId, timestamp,
       SUM(CASE WHEN eventType = 'directMarketing.emailSent' THEN 1 ELSE 0 END)
           OVER (PARTITION BY _{tenant}.userid ORDER BY timestamp, _id
                 ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS "emailsReceived",
       SUM(CASE WHEN eventType = 'commerce.productViews' THEN 1 ELSE 0 END)
           OVER (PARTITION BY _{tenant}.userid ORDER BY timestamp, _id
                 ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS "productsViewed"
FROM {table}""",
    ),
    Case(
        "time_between_previous_match",
        "CMLE W2 / QS Spark: TIME_BETWEEN_PREVIOUS_MATCH (Adobe-defined function)",
        _features("{table}", spark=False),
        spark_sql=_features("{table}", spark=True),
    ),
    Case(
        "snapshot_between_block",
        "CMLE W2 / QS SQL: anonymous block, SET @var from history_meta(), SNAPSHOT BETWEEN",
        f"""$$ BEGIN
SET @from_snapshot_id = SELECT parent_id FROM (SELECT history_meta('{{table}}')) WHERE is_current = true;
SET @to_snapshot_id = SELECT snapshot_id FROM (SELECT history_meta('{{table}}')) WHERE is_current = true;
SELECT * FROM ({_features("{table} SNAPSHOT BETWEEN @from_snapshot_id AND @to_snapshot_id", spark=False)})
WHERE subscriptionOccurred = 0;
EXCEPTION
  WHEN OTHER THEN
    SELECT 'ERROR';
END $$""",
        spark_sql=f"SELECT * FROM ({_features('{table}_latest_batch', spark=True)}) WHERE subscriptionOccurred = 0",
    ),
    Case(
        "snapshot_since_ctas",
        "CMLE W2 / QS SQL: CTAS over the data since a snapshot",
        "$$ BEGIN\n"
        "SET @from_snapshot_id = SELECT parent_id FROM (SELECT history_meta('{table}')) WHERE is_current = true;\n"
        "CREATE TABLE cmle_incremental_features AS\n"
        + _features("{table} SNAPSHOT SINCE @from_snapshot_id", spark=False)
        + ";\nEND $$",
        spark_sql="CREATE TABLE cmle_incremental_features AS " + _features("{table}_latest_batch", spark=True),
        result_table="cmle_incremental_features",
    ),
    Case(
        "snapshot_as_of",
        "QS SQL: SNAPSHOT AS OF the first snapshot",
        "$$ BEGIN\n"
        "SET @first = SELECT snapshot_id FROM (SELECT history_meta('{table}')) WHERE snapshot_generation = 1;\n"
        'SELECT eventType, COUNT(*) AS "events" FROM {table} SNAPSHOT AS OF @first GROUP BY eventType;\n'
        "END $$",
        spark_sql='SELECT eventType, COUNT(*) AS "events" FROM {table}_first_batch GROUP BY eventType',
    ),
    Case(
        "ctas_training_set",
        "CMLE W2: featurization CTAS, one row per user",
        "CREATE TABLE cmle_training_set AS " + _EVENT_COUNTS,
        result_table="cmle_training_set",
    ),
    Case(
        "ctas_if_not_exists_then_insert",
        "CMLE W2 / QS SQL: CREATE TABLE IF NOT EXISTS ... AS, then INSERT INTO appends to it",
        "CREATE TABLE IF NOT EXISTS cmle_converters AS " + _EVENT_COUNTS + " HAVING webFormsFilled > 0;\n"
        "INSERT INTO cmle_converters " + _EVENT_COUNTS + " HAVING webFormsFilled = 0 AND emailOpens > 2",
        result_table="cmle_converters",
    ),
    # --- Query Service docs: struct access, Spark functions, windows -----------------------------
    Case(
        "nested_leaf_paths",
        "QS guide: deep struct paths in projection, filter and aggregation",
        """SELECT web.webPageDetails.name AS page, SUM(web.webPageDetails.pageViews.value) AS views,
       COUNT(DISTINCT _{tenant}.userid) AS visitors
FROM {table}
WHERE web.webPageDetails.pageViews.value IS NOT NULL
GROUP BY web.webPageDetails.name
HAVING COUNT(*) > 1""",
    ),
    Case(
        "tenant_struct",
        "QS guide: the tenant object selected whole",
        "SELECT _{tenant}, eventType FROM {table} ORDER BY _id LIMIT 10",
        ordered=True,
    ),
    Case(
        "date_functions",
        "QS Spark: to_date, date_format, date_add, datediff, hour, unix_timestamp",
        """SELECT to_date(timestamp) AS day,
       date_format(timestamp, 'yyyy-MM-dd') AS day_text,
       date_add(to_date(timestamp), 7) AS week_later,
       datediff(to_date(timestamp), DATE '2026-03-01') AS days_in,
       hour(timestamp) AS hour_of_day,
       unix_timestamp(timestamp) AS epoch_s,
       COUNT(*) AS events
FROM {table}
GROUP BY 1, 2, 3, 4, 5, 6""",
    ),
    Case(
        "interval_window",
        "QS Spark: TIMESTAMP literals with INTERVAL n DAYS, to_timestamp",
        """SELECT COUNT(*) AS recent_events, COUNT(DISTINCT _{tenant}.userid) AS recent_users
FROM {table}
WHERE timestamp >= to_timestamp('2026-03-10 00:00:00') - INTERVAL 3 DAYS
  AND timestamp < TIMESTAMP '2026-03-10 00:00:00' + INTERVAL 1 DAYS""",
    ),
    Case(
        "lag_and_rank",
        "QS Spark: lag() and rank() windows, seconds between a user's events",
        """SELECT _{tenant}.userid AS userid, _id,
       unix_timestamp(timestamp) - unix_timestamp(lag(timestamp) OVER (PARTITION BY _{tenant}.userid ORDER BY timestamp, _id))
           AS seconds_since_previous,
       rank() OVER (PARTITION BY _{tenant}.userid ORDER BY timestamp, _id) AS event_rank
FROM {table}""",
    ),
    Case(
        "case_insensitive_cte",
        "QS SQL: a CTE and its columns referred to in another case",
        """WITH Daily AS (SELECT to_date(timestamp) AS Day, COUNT(*) AS Events FROM {table} GROUP BY to_date(timestamp))
SELECT day, events, SUM(events) OVER (ORDER BY day ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS running
FROM daily ORDER BY DAY""",
        ordered=True,
    ),
    Case(
        "email_measures",
        "QS guide: direct-marketing measures, COALESCE, IN list, CASE",
        """SELECT eventType,
       SUM(COALESCE(directMarketing.opens.value, 0)) AS opens,
       SUM(CASE WHEN directMarketing.clicks.value > 0 THEN 1 ELSE 0 END) AS clicked,
       AVG(directMarketing.sends.value) AS avg_sends
FROM {table}
WHERE eventType IN ('directMarketing.emailSent', 'directMarketing.emailOpened', 'directMarketing.emailClicked')
GROUP BY eventType""",
    ),
    Case(
        "union_all",
        "QS SQL: UNION ALL of two aggregates",
        """SELECT 'web' AS family, COUNT(*) AS events FROM {table} WHERE eventType LIKE 'web.%'
UNION ALL
SELECT 'email' AS family, COUNT(*) AS events FROM {table} WHERE eventType LIKE 'directMarketing.%'""",
    ),
    Case(
        "exists_subquery",
        "QS SQL: correlated EXISTS over the same dataset",
        """SELECT COUNT(DISTINCT e._{tenant}.userid) AS openers_who_converted
FROM {table} e
WHERE e.eventType = 'directMarketing.emailOpened'
  AND EXISTS (SELECT 1 FROM {table} c WHERE c._{tenant}.userid = e._{tenant}.userid AND c.eventType = 'web.formFilledOut')""",
    ),
]
