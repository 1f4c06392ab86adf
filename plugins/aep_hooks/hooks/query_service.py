"""
Query Service: queries and templates over REST (:class:`AEPQueryServiceApiHook`), and SQL over the
PostgreSQL wire protocol with the IMS token as password (:class:`AEPQueryServiceHook`).

.. seealso:: https://experienceleague.adobe.com/en/docs/experience-platform/query/api/getting-started
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.postgres.hooks.postgres import PostgresHook

from aep_hooks.hooks.base import item_path
from aep_hooks.hooks.rest import AEPRestHook

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

QUERY_SERVICE = "/data/foundation/query"
QUERIES = f"{QUERY_SERVICE}/queries"
CONNECTION_PARAMETERS = f"{QUERY_SERVICE}/connection_parameters"
#: The PATCH body that asks Query Service to cancel a query.
CANCEL_QUERY = {"op": "cancel"}
# Idle Query Service connections are dropped server-side; keep TCP keepalives below 300 s.
QS_KEEPALIVES_IDLE = 240


class AEPQueryServiceApiHook(AEPRestHook):
    """Query Service REST calls. Arguments as :class:`~aep_hooks.hooks.base.AEPBaseHook`."""

    def create_query(self, body: dict) -> dict:
        """
        Submit an asynchronous query (never retried on 5xx).

        :param body: ``{dbName, sql | templateId, queryParameters?, ctasParameters?...}``.
        """
        return self.post_json(QUERIES, body)

    def get_query(self, query_id: str) -> dict:
        """
        Return a query with its ``state``, ``errors`` and ``rowCount``.

        :param query_id: the query id.
        """
        return self.get_json(item_path(QUERIES, query_id))

    def cancel_query(self, query_id: str) -> None:
        """
        Ask Query Service to cancel a running query.

        :param query_id: the query id.
        """
        self.request("PATCH", item_path(QUERIES, query_id), json=CANCEL_QUERY)

    def get_connection_parameters(self) -> dict:
        """Return the PostgreSQL connection parameters of Query Service (host, port, dbName, username)."""
        return self.get_json(CONNECTION_PARAMETERS)


class AEPQueryServiceHook(PostgresHook):
    """
    Query Service over the PostgreSQL wire protocol, from an ``aep`` connection.

    Connection parameters come from ``GET /connection_parameters``; the password is a fresh IMS
    token fetched at connect time; ``sslmode`` is the connection's ``qs_sslmode`` extra (default
    ``require``). No AEP-only extra reaches libpq.

    :param aep_conn_id: the ``aep`` connection id.
    :param sandbox: a sandbox that overrides the connection's (``dbname`` becomes ``{sandbox}:all``).
    :param database: a ``dbname`` other than ``{sandbox}:all``, e.g. ``prod:my_table``.
    """

    conn_name_attr = "aep_conn_id"
    default_conn_name = "aep_default"
    conn_type = "aep"
    hook_name = "Adobe Experience Platform Query Service"

    def __init__(self, *args: Any, sandbox: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sandbox = sandbox

    @cached_property
    def aep_hook(self) -> AEPQueryServiceApiHook:
        """The REST hook that reads the connection parameters and the token."""
        return AEPQueryServiceApiHook(self.get_conn_id(), sandbox=self._sandbox)

    def _connect_kwargs(self) -> dict[str, Any]:
        params = self.aep_hook.get_connection_parameters()
        return {
            "host": params["host"],
            "port": int(params["port"]),
            "user": params.get("username") or self.aep_hook.settings.org_id,
            "password": self.aep_hook.get_token(),
            "dbname": self.database or f"{self.aep_hook.settings.sandbox}:all",
            "sslmode": self.aep_hook.settings.qs_sslmode,
        }

    def get_conn(self):
        """Connect to Query Service with a fresh token as password."""
        self.conn = self._create_connection({**self._connect_kwargs(), "keepalives_idle": QS_KEEPALIVES_IDLE})
        return self.conn

    @property
    def sqlalchemy_url(self) -> URL:
        """The SQLAlchemy URL of Query Service (fresh token as password)."""
        from sqlalchemy.engine import URL

        kwargs = self._connect_kwargs()
        return URL.create(
            drivername=self.sqlalchemy_scheme,
            username=kwargs["user"],
            password=kwargs["password"],
            host=kwargs["host"],
            port=kwargs["port"],
            database=kwargs["dbname"],
            query={"sslmode": kwargs["sslmode"]},
        )
