"""
Schema Registry: the tenant id, tenant schemas and field groups, descriptors.

.. seealso:: https://experienceleague.adobe.com/en/docs/experience-platform/xdm/api/getting-started
"""

from __future__ import annotations

from urllib.parse import quote

from aep_hooks.hooks.rest import AEPRestHook

SCHEMA_REGISTRY = "/data/foundation/schemaregistry"
STATS = f"{SCHEMA_REGISTRY}/stats"
TENANT = f"{SCHEMA_REGISTRY}/tenant"
DESCRIPTORS = f"{TENANT}/descriptors"
XED_ACCEPT = "application/vnd.adobe.xed+json"
XED_FULL_ACCEPT = "application/vnd.adobe.xed-full+json; version=1"
XED_ONE_ACCEPT = "application/vnd.adobe.xed+json; version=1"
XDM_ACCEPT = "application/vnd.adobe.xdm+json"


def tenant_resources_path(kind: str) -> str:
    """The path of the tenant's ``schemas`` or ``fieldgroups``."""
    return f"{TENANT}/{kind}"


def schema_path(id_or_alt_id: str) -> str:
    """The path of one tenant schema, by ``$id`` or ``meta:altId``."""
    return f"{tenant_resources_path('schemas')}/{quote(id_or_alt_id, safe='')}"


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
            tenant_resources_path(kind),
            "results",
            params={"property": f"title=={title}"},
            headers={"Accept": XED_ACCEPT},
        )
        return next((resource for resource in resources if resource.get("title") == title), None)

    def create_schema_resource(self, kind: str, body: dict) -> dict:
        """
        Create a tenant schema or field group (never retried on 5xx: look it up first).

        :param kind: ``schemas`` or ``fieldgroups``.
        :param body: the XDM resource.
        """
        return self.post_json(tenant_resources_path(kind), body)

    def get_schema(self, id_or_alt_id: str, full: bool = False) -> dict:
        """
        Return a tenant schema.

        :param id_or_alt_id: the schema ``$id`` or ``meta:altId``.
        :param full: resolve the ``$ref``s (``xed-full``).
        """
        return self.get_json(
            schema_path(id_or_alt_id),
            headers={"Accept": XED_FULL_ACCEPT if full else XED_ONE_ACCEPT},
        )

    def patch_schema(self, schema_id: str, ops: list[dict]) -> dict:
        """
        Apply a JSON Patch to a tenant schema.

        :param schema_id: the schema ``$id`` or ``meta:altId``.
        :param ops: JSON Patch operations.
        """
        return self._send_json("PATCH", schema_path(schema_id), ops)

    def find_descriptors(self, schema_id: str) -> list[dict]:
        """
        Return the descriptors whose source schema is ``schema_id``.

        :param schema_id: the schema ``$id``.
        """
        body = self.get_json(
            DESCRIPTORS,
            params={"property": f"xdm:sourceSchema=={schema_id}"},
            headers={"Accept": XDM_ACCEPT},
        )
        descriptors = [d for group in body.values() for d in group] if isinstance(body, dict) else body or []
        return [d for d in descriptors if isinstance(d, dict) and d.get("xdm:sourceSchema") == schema_id]

    def create_descriptor(self, body: dict) -> dict:
        """
        Create a descriptor (e.g. a primary identity).

        :param body: the descriptor.
        """
        return self.post_json(DESCRIPTORS, body)
