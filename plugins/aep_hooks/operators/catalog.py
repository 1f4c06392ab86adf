"""
Datasets (Catalog) and the XDM resources (Schema Registry) they rest on, got or created by name.

.. seealso:: https://experienceleague.adobe.com/docs/experience-platform/xdm/api/getting-started.html
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from aep_hooks.links import AEPDatasetLink
from aep_hooks.operators.base import AEPBaseOperator, load_json

if TYPE_CHECKING:
    from airflow.sdk import Context

PROFILE_CLASS = "https://ns.adobe.com/xdm/context/profile"
_XDM_FORMATS = {"date-time": ("string", "date-time"), "date": ("string", "date")}


class AEPEnsureDatasetOperator(AEPBaseOperator):
    """
    Get or create a dataset and its XDM resources by deterministic name; a second run creates nothing.

    The spec (a dict, or a ``.json`` template)::

        {"dataset": "propensity_scores",
         "schema": {"title": "Propensity scores",
                    "class": "https://ns.adobe.com/xdm/context/profile",
                    "field_groups": ["<standard field group $id>", ...],
                    "tenant_field_group": {"title": "Propensity fields",
                                           "fields": {"userid": "string", "propensity": "number"}}},
         "identity": {"field": "userid", "namespace": "ECID"},
         "profile_enabled": true}

    Creates the tenant field group, the schema, the primary identity descriptor, the ``union`` tag and
    the dataset when missing, enables Profile on the dataset, then validates the schema (one primary
    identity, the union tag) and reads the dataset tags back.

    .. seealso:: https://experienceleague.adobe.com/docs/experience-platform/xdm/api/getting-started.html

    :param spec: the dataset spec, or the path of a ``.json`` template holding it.
    :return: ``{"dataset_id", "table_name", "schema_id", "tenant_id"}``.
    """

    template_fields: Sequence[str] = ("spec",)
    template_ext: Sequence[str] = (".json",)
    template_fields_renderers = {"spec": "json"}
    operator_extra_links = (AEPDatasetLink(),)

    def __init__(self, *, spec: dict[str, Any] | str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec

    def execute(self, context: Context) -> dict[str, str]:
        spec = load_json(self.spec)
        tenant_id = self.hook.get_tenant_id()
        schema_spec = spec["schema"]
        field_group_id = self._ensure_field_group(schema_spec, tenant_id)
        schema = self._ensure_schema(schema_spec, field_group_id)
        identity_path = f"/_{tenant_id}/{spec['identity']['field']}"
        self._ensure_identity(schema["$id"], identity_path, spec["identity"]["namespace"])
        if spec.get("profile_enabled"):
            self._ensure_union(schema)
        self._validate_schema(schema["$id"], identity_path, bool(spec.get("profile_enabled")))
        dataset = self._ensure_dataset(spec["dataset"], schema["$id"], bool(spec.get("profile_enabled")))
        self.persist_link(context, AEPDatasetLink, dataset["id"])
        return {
            "dataset_id": dataset["id"],
            "table_name": dataset["tags"]["adobe/pqs/table"][0],
            "schema_id": schema["$id"],
            "tenant_id": tenant_id,
        }

    def _ensure_field_group(self, schema_spec: dict[str, Any], tenant_id: str) -> str:
        group = schema_spec["tenant_field_group"]
        existing = self.hook.find_schema_resource("fieldgroups", group["title"])
        if existing:
            return existing["$id"]
        properties = {}
        for field, xdm_type in group["fields"].items():
            json_type, fmt = _XDM_FORMATS.get(xdm_type, (xdm_type, None))
            properties[field] = {"type": json_type, **({"format": fmt} if fmt else {})}
        created = self.hook.create_schema_resource(
            "fieldgroups",
            {
                "title": group["title"],
                "type": "object",
                "meta:intendedToExtend": [schema_spec["class"]],
                "allOf": [{"$ref": "#/definitions/customFields"}],
                "definitions": {
                    "customFields": {
                        "type": "object",
                        "properties": {f"_{tenant_id}": {"type": "object", "properties": properties}},
                    }
                },
            },
        )
        self.log.info("Created field group %s (%s)", group["title"], created["$id"])
        return created["$id"]

    def _ensure_schema(self, schema_spec: dict[str, Any], field_group_id: str) -> dict[str, Any]:
        existing = self.hook.find_schema_resource("schemas", schema_spec["title"])
        if existing:
            return existing
        refs = [schema_spec["class"], *schema_spec.get("field_groups", []), field_group_id]
        created = self.hook.create_schema_resource(
            "schemas",
            {"title": schema_spec["title"], "type": "object", "allOf": [{"$ref": ref} for ref in refs]},
        )
        self.log.info("Created schema %s (%s)", schema_spec["title"], created["$id"])
        return created

    def _primary_identities(self, schema_id: str) -> list[dict[str, Any]]:
        return [
            d
            for d in self.hook.find_descriptors(schema_id)
            if d.get("@type") == "xdm:descriptorIdentity" and d.get("xdm:isPrimary")
        ]

    def _ensure_identity(self, schema_id: str, path: str, namespace: str) -> None:
        if any(d.get("xdm:sourceProperty") == path for d in self._primary_identities(schema_id)):
            return
        created = self.hook.create_descriptor(
            {
                "@type": "xdm:descriptorIdentity",
                "xdm:sourceSchema": schema_id,
                "xdm:sourceVersion": 1,
                "xdm:sourceProperty": path,
                "xdm:namespace": namespace,
                "xdm:property": "xdm:code",
                "xdm:isPrimary": True,
            }
        )
        self.log.info("Created primary identity %s (%s) on %s: %s", path, namespace, schema_id, created.get("@id"))

    def _ensure_union(self, schema: dict[str, Any]) -> None:
        if "union" in self.hook.get_schema(schema["$id"]).get("meta:immutableTags", []):
            return
        self.hook.patch_schema(schema["meta:altId"], [{"op": "add", "path": "/meta:immutableTags", "value": ["union"]}])
        self.log.info("Tagged schema %s with union (Profile)", schema["$id"])

    def _validate_schema(self, schema_id: str, identity_path: str, profile_enabled: bool) -> None:
        identities = self._primary_identities(schema_id)
        paths = [d.get("xdm:sourceProperty") for d in identities]
        if paths != [identity_path]:
            raise AirflowFailException(
                f"Schema {schema_id} must have exactly one primary identity on {identity_path}, has {paths}"
            )
        if profile_enabled and "union" not in self.hook.get_schema(schema_id).get("meta:immutableTags", []):
            raise AirflowFailException(f"Schema {schema_id} has no union tag; it cannot feed Profile")

    def _ensure_dataset(self, name: str, schema_id: str, profile_enabled: bool) -> dict[str, Any]:
        found = [doc for doc in self.hook.find_datasets(name=name).values() if doc.get("name") == name]
        if len(found) > 1:
            raise AirflowFailException(f"{len(found)} datasets are named {name}: {[d['id'] for d in found]}")
        if found:
            dataset = found[0]
        else:
            dataset_id = self.hook.create_dataset(
                {
                    "name": name,
                    "schemaRef": {"id": schema_id, "contentType": "application/vnd.adobe.xed+json;version=1"},
                    "fileDescription": {"persisted": True, "containerFormat": "parquet", "format": "parquet"},
                }
            )
            self.log.info("Created dataset %s (%s)", name, dataset_id)
            dataset = self.hook.get_dataset(dataset_id)
        if dataset["schemaRef"]["id"] != schema_id:
            raise AirflowFailException(
                f"Dataset {name} ({dataset['id']}) uses schema {dataset['schemaRef']['id']}, not {schema_id}"
            )
        if profile_enabled and not _profile_enabled(dataset):
            self.hook.patch_dataset(
                dataset["id"],
                [
                    {"op": "add", "path": "/tags/unifiedProfile", "value": ["enabled:true"]},
                    {"op": "add", "path": "/tags/unifiedIdentity", "value": ["enabled:true"]},
                ],
            )
            dataset = self.hook.get_dataset(dataset["id"])
            if not _profile_enabled(dataset):
                raise AirflowFailException(
                    f"Dataset {dataset['id']} tags do not show Profile enabled: {dataset.get('tags')}"
                )
            self.log.info("Enabled Profile on dataset %s", dataset["id"])
        return dataset


def _profile_enabled(dataset: dict[str, Any]) -> bool:
    tags = dataset.get("tags") or {}
    return "enabled:true" in tags.get("unifiedProfile", []) and "enabled:true" in tags.get("unifiedIdentity", [])
