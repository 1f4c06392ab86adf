"""
Schema Registry: the tenant id, tenant schemas and field groups, descriptors.

.. seealso:: https://experienceleague.adobe.com/en/docs/experience-platform/xdm/api/getting-started
"""

from __future__ import annotations

from aep_hooks.hooks.base import item_path
from aep_hooks.hooks.rest import AEPRestHook

SCHEMA_REGISTRY = "/data/foundation/schemaregistry"
STATS = f"{SCHEMA_REGISTRY}/stats"
TENANT = f"{SCHEMA_REGISTRY}/tenant"
DESCRIPTORS = f"{TENANT}/descriptors"


class AEPSchemaRegistryHook(AEPRestHook):
    """Schema Registry calls. Arguments as :class:`~aep_hooks.hooks.base.AEPBaseHook`."""

    def get_tenant_id(self) -> str:
        """Return the org's tenant id (custom XDM fields live under ``_{tenantId}``)."""
        return self.get_json(STATS, headers={"Accept": "application/json"})["tenantId"]

    def find_schema_resource(self, kind: str, title: str) -> dict | None:
        """
        Return the tenant schema or field group with this title, if any.

        :param kind: ``schemas`` or ``fieldgroups``.
        :param title: the resource title (unique per sandbox).
        """
        resources = self.iter_query_service(
            item_path(TENANT, kind),
            "results",
            params={"property": f"title=={title}"},
            headers={"Accept": "application/vnd.adobe.xed+json"},
        )
        return next((resource for resource in resources if resource.get("title") == title), None)

    def create_schema_resource(self, kind: str, body: dict) -> dict:
        """
        Create a tenant schema or field group (never retried on 5xx: look it up first).

        :param kind: ``schemas`` or ``fieldgroups``.
        :param body: the XDM resource.
        """
        return self.post_json(item_path(TENANT, kind), body)

    def get_schema(self, id_or_alt_id: str, full: bool = False) -> dict:
        """
        Return a tenant schema.

        :param id_or_alt_id: the schema ``$id`` or ``meta:altId``.
        :param full: resolve the ``$ref``s (``xed-full``).
        """
        return self.get_json(
            item_path(item_path(TENANT, "schemas"), id_or_alt_id),
            headers={
                "Accept": "application/vnd.adobe.xed-full+json; version=1"
                if full
                else "application/vnd.adobe.xed+json; version=1"
            },
        )

    def patch_schema(self, schema_id: str, ops: list[dict]) -> dict:
        """
        Apply a JSON Patch to a tenant schema.

        :param schema_id: the schema ``$id`` or ``meta:altId``.
        :param ops: JSON Patch operations.
        """
        return self._send_json("PATCH", item_path(item_path(TENANT, "schemas"), schema_id), ops)

    def find_descriptors(self, schema_id: str) -> list[dict]:
        """
        Return the descriptors whose source schema is ``schema_id``.

        :param schema_id: the schema ``$id``.
        """
        body = self.get_json(
            DESCRIPTORS,
            params={"property": f"xdm:sourceSchema=={schema_id}"},
            headers={"Accept": "application/vnd.adobe.xdm+json"},
        )
        descriptors = [d for group in body.values() for d in group] if isinstance(body, dict) else body or []
        return [d for d in descriptors if isinstance(d, dict) and d.get("xdm:sourceSchema") == schema_id]

    def create_descriptor(self, body: dict) -> dict:
        """
        Create a descriptor (e.g. a primary identity).

        :param body: the descriptor.
        """
        return self.post_json(DESCRIPTORS, body)
