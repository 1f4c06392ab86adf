"""Identity namespaces: the standard ones, custom creation, code conflicts."""

import uuid

import pytest

from tests.support.openapi import validate_response

pytestmark = pytest.mark.integration

NAMESPACES = "/data/core/idnamespace/identities"


def test_standard_namespaces_include_ecid(aep):
    resp = aep.get(NAMESPACES)
    assert resp.status_code == 200
    validate_response(resp)
    by_code = {n["code"]: n for n in resp.json()}
    # The spec's list enum is upper case (COOKIE), its single-namespace enum mixed case (Cookie).
    assert by_code["ECID"]["idType"] == "COOKIE" and by_code["Email"]["idType"] == "Email"
    one = aep.get(f"{NAMESPACES}/{by_code['ECID']['id']}")
    assert one.status_code == 200 and (one.json()["code"], one.json()["idType"]) == ("ECID", "Cookie")
    validate_response(one)


def test_custom_namespace_is_created_once_per_code(aep):
    code = f"Loyalty{uuid.uuid4().hex[:6]}"
    body = {"name": "Loyalty member", "code": code, "idType": "Cross_device", "description": "loyalty id"}
    created = aep.post(NAMESPACES, json=body)
    assert created.status_code == 200, created.text
    validate_response(created)
    assert created.json()["custom"] is True
    assert aep.get(f"{NAMESPACES}/{created.json()['id']}").json()["code"] == code
    conflict = aep.post(NAMESPACES, json=body)
    assert conflict.status_code == 409
    validate_response(conflict)
    assert conflict.json()["title"] == "NAMESPACE_CODE_CONFLICT"


def test_bad_namespace_requests(aep):
    assert aep.post(NAMESPACES, json={"name": "x", "code": "y", "idType": "Shoe"}).status_code == 400
    assert aep.get(f"{NAMESPACES}/999").status_code == 404
