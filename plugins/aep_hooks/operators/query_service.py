"""Query Service SQL: asynchronous queries and CTAS over REST, small interactive queries over the wire."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlglot
from airflow.sdk.exceptions import AirflowFailException
from sqlglot import exp

from aep_hooks.exceptions import AEPInputError, AEPNoRowsError
from aep_hooks.hooks.query_service import AEPQueryServiceHook
from aep_hooks.links import AEPDatasetLink, AEPQueryLink
from aep_hooks.operators.base import AEPBaseOperator, load_json
from aep_hooks.triggers.query_service import QueryStatusTrigger
from aep_hooks.utils.job_states import QUERY, sql_fault

if TYPE_CHECKING:
    from airflow.sdk import Context


def source_tables(sql: str) -> list[str]:
    """
    The tables the SQL reads (not its CTEs, nor the table a CTAS or INSERT INTO writes), for messages.

    :param sql: the rendered SQL (Spark SQL, as Query Service takes it).
    """
    try:
        statements = [s for s in sqlglot.parse(sql, read="spark") if s is not None]
    except sqlglot.errors.SqlglotError:
        return []
    written = {
        target.name
        for s in statements
        if isinstance(s, (exp.Create, exp.Insert))
        for target in [s.this if isinstance(s.this, exp.Table) else s.this.find(exp.Table)]
        if target is not None
    }
    ctes = {cte.alias_or_name for s in statements for cte in s.find_all(exp.CTE)}
    read = {table.name for s in statements for table in s.find_all(exp.Table)}
    return sorted(read - ctes - written)


class AEPQueryOperator(AEPBaseOperator):
    """
    Run Query Service SQL from a templated file or string.

    ``mode="async"`` submits ``POST /queries`` (CTAS when ``ctas_table`` is set, or the SQL's own
    CTAS / INSERT INTO) and waits for a terminal state; FAILED, KILLED and TIMEOUT fail the task with
    AEP's errors. After a CTAS or INSERT INTO the output dataset must exist and the query must have
    written rows. ``mode="interactive"`` runs the SQL over the PostgreSQL wire and returns its
    (small) result.

    .. seealso:: https://experienceleague.adobe.com/docs/experience-platform/query/api/queries.html

    The SQL is Spark SQL, one text for AEP and the emulator. Its template sees, besides Airflow's
    context, ``tenant`` (the org's tenant id); ``sql_vars`` are merged into ``params`` (values known
    only at run time, such as upstream outputs).

    :param sql: the SQL, or the path of a ``.sql`` template.
    :param sql_vars: extra ``params`` for the template (a dict, or an upstream task's output).
    :param query_parameters: values for ``$name`` placeholders (async only).
    :param ctas_table: wrap the SELECT in a CTAS creating this table (async only).
    :param db_name: Query Service database (default ``{sandbox}:all``).
    :param mode: ``"async"`` or ``"interactive"``.
    :param allow_empty: accept a CTAS / INSERT INTO that wrote no rows.
    :param max_rows: interactive only: fail when the result has more rows than this.
    :return: async ``{"query_id", "state", "rowCount", "dataset_id"}``; interactive ``{"rows", "rowCount"}``.
    """

    template_fields: Sequence[str] = ("sql_vars", "sql", "query_parameters", "ctas_table", "db_name")
    template_ext: Sequence[str] = (".sql", ".json")
    template_fields_renderers = {"sql": "sql", "query_parameters": "json", "sql_vars": "json"}
    operator_extra_links = (AEPQueryLink(), AEPDatasetLink())

    def __init__(
        self,
        *,
        sql: str,
        sql_vars: dict[str, Any] | Any = None,
        query_parameters: dict[str, Any] | str | None = None,
        ctas_table: str | None = None,
        db_name: str | None = None,
        mode: str = "async",
        allow_empty: bool = False,
        max_rows: int = 1000,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if mode not in ("async", "interactive"):
            raise ValueError(f"mode must be 'async' or 'interactive', not {mode!r}")
        if mode == "interactive" and (ctas_table or query_parameters):
            raise ValueError("ctas_table and query_parameters need mode='async'")
        self.sql = sql
        self.sql_vars = sql_vars
        self.query_parameters = query_parameters
        self.ctas_table = ctas_table
        self.db_name = db_name
        self.mode = mode
        self.allow_empty = allow_empty
        self.max_rows = max_rows
        self.query_id: str | None = None

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        """Render ``sql_vars`` first, then the other fields with it in ``params``, and ``tenant``."""
        jinja_env = jinja_env or self.get_template_env()
        self._do_render_template_fields(self, ("sql_vars",), context, jinja_env, set())
        sql_context = {
            **context,
            "tenant": self.hook.get_tenant_id(),
            "params": {**(context.get("params") or {}), **(self.sql_vars or {})},
        }
        others = [f for f in self.template_fields if f != "sql_vars"]
        self._do_render_template_fields(self, others, sql_context, jinja_env, set())

    def execute(self, context: Context) -> dict[str, Any]:
        if self.mode == "interactive":
            return self._run_interactive()
        self.query_id = self.start_or_reattach(context, QUERY, "query_id", lambda: self._submit(context))
        query_id = self.query_id
        self.persist_link(context, AEPQueryLink, query_id)
        return self.wait_for(context, QueryStatusTrigger, query_id)

    def execute_complete(self, context: Context, event: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        query_id = self.check_event(QUERY, event)
        return self._verify_output(context, self.hook.get_query(query_id))

    def on_kill(self) -> None:
        if self.query_id:
            self.log.info("Cancelling query %s", self.query_id)
            self.hook.cancel_query(self.query_id)

    def _submit(self, context: Context) -> str:
        body: dict[str, Any] = {
            "dbName": self.db_name or f"{self.hook.settings.sandbox}:all",
            "sql": self.sql,
            "name": f"{context['dag'].dag_id}.{self.task_id}",
        }
        if self.query_parameters:
            body["queryParameters"] = load_json(self.query_parameters)
        if self.ctas_table:
            body["ctasParameters"] = {"datasetName": self.ctas_table, "description": body["name"]}
        query = self.hook.create_query(body)
        self.log.info("Submitted query %s (%s)", query["id"], body["name"])
        return query["id"]

    def _verify_output(self, context: Context, query: dict[str, Any]) -> dict[str, Any]:
        result = {"query_id": query["id"], "state": query["state"], "rowCount": query.get("rowCount", 0)}
        writes = self.ctas_table or query.get("isCTAS") or query.get("isInsertInto")
        if not writes:
            return result
        dataset_id = ((query.get("_links") or {}).get("created_dataset") or {}).get("id")
        if not dataset_id and self.ctas_table:
            named = [
                i for i, d in self.hook.find_datasets(name=self.ctas_table).items() if d.get("name") == self.ctas_table
            ]
            dataset_id = named[0] if named else None
        if dataset_id:
            dataset_id = self.hook.get_dataset(dataset_id)["id"]
        if query.get("isCTAS") or self.ctas_table:
            if not dataset_id:
                raise AirflowFailException(f"Query {query['id']} succeeded but its CTAS dataset does not exist")
            result["dataset_id"] = dataset_id
            self.persist_link(context, AEPDatasetLink, dataset_id)
        if not result["rowCount"] and not self.allow_empty:
            tables = source_tables(self.sql)
            inputs = f"its input tables ({', '.join(tables)})" if tables else "its input tables"
            raise AEPNoRowsError(
                f"Query {query['id']} ({self.task_id}) succeeded but wrote no rows"
                f"{f' to dataset {dataset_id}' if dataset_id else ''}: {inputs} have no rows it selects. Check that"
                " the data for these dates was ingested and the query's parameters; pass allow_empty=True if an"
                " empty result is expected"
            )
        return result

    def _run_interactive(self) -> dict[str, Any]:
        try:
            rows = AEPQueryServiceHook(aep_conn_id=self.aep_conn_id, sandbox=self.sandbox).get_records(self.sql) or []
        except Exception as err:
            # psycopg 3 names it sqlstate, psycopg2 pgcode; any other error (a dropped connection) stays retryable.
            sqlstate = getattr(err, "sqlstate", None) or getattr(err, "pgcode", None)
            if not sql_fault(sqlstate):
                raise
            raise AEPInputError(
                f"Query Service refused the SQL of {self.task_id} (SQLSTATE {sqlstate}): {str(err).strip()}."
                " Not retried: fix the SQL or its parameters"
            ) from err
        if len(rows) > self.max_rows:
            raise AirflowFailException(
                f"Interactive query returned {len(rows)} rows (max_rows={self.max_rows}); use mode='async' with a CTAS"
            )
        return {"rows": json.loads(json.dumps([list(r) for r in rows], default=str)), "rowCount": len(rows)}
