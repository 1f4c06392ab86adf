"""``AEPHook``: every AEP service's calls on one hook, the hook of the ``aep`` connection type."""

from __future__ import annotations

import requests

from aep_hooks.exceptions import AEPError
from aep_hooks.hooks.catalog import AEPCatalogHook
from aep_hooks.hooks.flow_service import AEPFlowServiceHook
from aep_hooks.hooks.ingestion import AEPIngestionHook
from aep_hooks.hooks.query_service import AEPQueryServiceApiHook
from aep_hooks.hooks.schema_registry import AEPSchemaRegistryHook
from aep_hooks.hooks.segmentation import AEPSegmentationHook


class AEPHook(
    AEPSchemaRegistryHook,
    AEPCatalogHook,
    AEPIngestionHook,
    AEPQueryServiceApiHook,
    AEPFlowServiceHook,
    AEPSegmentationHook,
):
    """
    Interact with the Adobe Experience Platform REST APIs: the calls of every service hook, one token.

    The operators use it because one task often spans services (a CTAS query reads its dataset
    from Catalog); a DAG's own task may as well use the one service hook it needs. Arguments as
    :class:`~aep_hooks.hooks.base.AEPBaseHook`.
    """

    hook_name = "Adobe Experience Platform"

    def test_connection(self) -> tuple[bool, str]:
        """Fetch a token and read the Schema Registry stats of the sandbox."""
        try:
            tenant_id = self.get_tenant_id()
        except (AEPError, requests.RequestException, ValueError) as err:
            return False, str(err)
        return True, f"Connected to {self.settings.platform_url}, sandbox {self.settings.sandbox}, tenant {tenant_id}"
