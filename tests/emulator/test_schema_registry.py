"""Schema Registry: tenant field groups and schemas, Accept rules, descriptors, the union tag."""

from urllib.parse import quote

import pytest

from aep_emulator.xdm import EXPERIENCE_EVENT, WEB_FIELD_GROUP
from tests.emulator import REGISTRY, XED_JSON, create_event_schema, create_field_group, unique
from tests.support.openapi import validate_response

pytestmark = pytest.mark.integration


def test_stats_reports_tenant(aep, emulator):
    resp = aep.get(f"{REGISTRY}/stats")
    assert resp.status_code == 200
    validate_response(resp)
    assert resp.json()["tenantId"] == emulator.settings.tenant_id


def test_schema_ids_derive_from_tenant_and_lookup_by_either_id(aep, emulator):
    schema = create_event_schema(aep, emulator.settings.tenant_id)
    tenant = emulator.settings.tenant_id
    assert schema["$id"].startswith(f"https://ns.adobe.com/{tenant}/schemas/")
    assert schema["meta:altId"] == f"_{tenant}.schemas.{schema['$id'].rsplit('/', 1)[1]}"
    assert schema["meta:class"] == EXPERIENCE_EVENT
    for ref in (quote(schema["$id"], safe=""), schema["meta:altId"]):
        resp = aep.get(f"{REGISTRY}/tenant/schemas/{ref}", headers=XED_JSON)
        assert resp.status_code == 200, resp.text
        validate_response(resp)
        assert resp.json()["$id"] == schema["$id"]
    full = aep.get(
        f"{REGISTRY}/tenant/schemas/{schema['meta:altId']}",
        headers={"Accept": "application/vnd.adobe.xed-full+json; version=1"},
    ).json()
    assert full["properties"]["web"]["properties"]["webPageDetails"]["properties"]["URL"]["type"] == "string"
    assert "userid" in full["properties"][f"_{tenant}"]["properties"]


@pytest.mark.parametrize(
    ("accept", "code"),
    [
        pytest.param(None, "XDM-1006-400", id="missing"),
        pytest.param("application/json", "XDM-1008-400", id="not-xed"),
        pytest.param("application/vnd.adobe.xed+json", "XDM-1009-400", id="no-version"),
    ],
)
def test_lookup_accept_errors(aep, accept, code):
    headers = {"Accept": accept} if accept else {}
    resp = aep.get(f"{REGISTRY}/global/classes/{quote(EXPERIENCE_EVENT, safe='')}", headers=headers)
    assert resp.status_code == 400
    validate_response(resp)
    assert resp.json()["type"].endswith(code)
    assert resp.json()["detail"]


def test_listing_with_trailing_slash_and_title_filter(aep, emulator):
    field_group = create_field_group(aep, emulator.settings.tenant_id)
    resp = aep.get(
        f"{REGISTRY}/tenant/fieldgroups/",
        params={"property": f"title=={field_group['title']}"},
        headers={"Accept": "application/vnd.adobe.xed-id+json"},
    )
    assert resp.status_code == 200
    validate_response(resp)
    assert [r["$id"] for r in resp.json()["results"]] == [field_group["$id"]]


def test_duplicate_title_is_a_conflict(aep, emulator):
    title = unique("dup")
    create_field_group(aep, emulator.settings.tenant_id, title=title)
    resp = aep.post(
        f"{REGISTRY}/tenant/mixins",
        json={"title": title, "type": "object", "meta:intendedToExtend": [], "definitions": {}, "allOf": []},
    )
    assert resp.status_code == 409
    assert resp.json()["type"].endswith("XDM-1521-409")


def test_schema_rejects_unknown_field_group(aep):
    resp = aep.post(
        f"{REGISTRY}/tenant/schemas",
        json={
            "title": unique("bad"),
            "type": "object",
            "allOf": [{"$ref": EXPERIENCE_EVENT}, {"$ref": "https://ns.adobe.com/acme/mixins/nope"}],
        },
    )
    assert resp.status_code == 400
    assert "mixins/nope" in resp.json()["detail"]


def test_union_tag_needs_primary_identity_and_is_immutable(aep, emulator):
    tenant = emulator.settings.tenant_id
    schema = create_event_schema(aep, tenant)
    path = f"{REGISTRY}/tenant/schemas/{schema['meta:altId']}"
    union = [{"op": "add", "path": "/meta:immutableTags", "value": ["union"]}]
    refused = aep.patch(path, json=union)
    assert refused.status_code == 400
    assert "primary identity" in refused.json()["detail"]

    descriptor = aep.post(
        f"{REGISTRY}/tenant/descriptors",
        json={
            "@type": "xdm:descriptorIdentity",
            "xdm:sourceSchema": schema["$id"],
            "xdm:sourceVersion": 1,
            "xdm:sourceProperty": f"/_{tenant}/userid",
            "xdm:namespace": "ECID",
            "xdm:property": "xdm:id",
            "xdm:isPrimary": True,
        },
    )
    assert descriptor.status_code == 201, descriptor.text
    assert len(descriptor.json()["@id"]) == 40
    # AEP's documented requests send the integer 1; the spec types the answer as a string, which wins.
    validate_response(descriptor)
    assert descriptor.json()["xdm:sourceVersion"] == "1"

    patched = aep.patch(path, json=union)
    assert patched.status_code == 200, patched.text
    validate_response(patched)
    assert patched.json()["meta:immutableTags"] == ["union"]
    assert patched.json()["version"] == "1.1"
    unions = aep.get(f"{REGISTRY}/tenant/unions", headers={"Accept": "application/vnd.adobe.xed-id+json"})
    validate_response(unions)
    assert any(r["$id"] == f"{EXPERIENCE_EVENT}__union" for r in unions.json()["results"])
    removed = aep.patch(path, json=[{"op": "remove", "path": "/meta:immutableTags"}])
    assert removed.status_code == 400


def test_descriptor_must_point_at_a_schema_field(aep, emulator):
    schema = create_event_schema(aep, emulator.settings.tenant_id)
    resp = aep.post(
        f"{REGISTRY}/tenant/descriptors",
        json={
            "@type": "xdm:descriptorIdentity",
            "xdm:sourceSchema": schema["$id"],
            "xdm:sourceVersion": 1,
            "xdm:sourceProperty": "/_acme/nope",
            "xdm:namespace": "ECID",
            "xdm:property": "xdm:code",
            "xdm:isPrimary": True,
        },
    )
    assert resp.status_code == 400
    assert "/_acme/nope" in resp.json()["detail"]


def test_global_field_group_lookup(aep):
    resp = aep.get(f"{REGISTRY}/global/fieldgroups/{quote(WEB_FIELD_GROUP, safe='')}", headers=XED_JSON)
    assert resp.status_code == 200
    validate_response(resp)
    assert resp.json()["meta:intendedToExtend"] == [EXPERIENCE_EVENT]
