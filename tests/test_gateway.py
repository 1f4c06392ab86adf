"""Gateway and IMS behaviour: AEP's statuses and bodies for each auth failure."""

import pytest
import requests

pytestmark = pytest.mark.integration

CATALOG = "/data/foundation/catalog/dataSets"


def test_token_is_issued_with_expiry_in_seconds(aep):
    resp = requests.post(
        aep.base_url + "/ims/token/v3",
        data={
            "grant_type": "client_credentials",
            "client_id": aep.settings.client_id,
            "client_secret": aep.settings.client_secret,
            "scope": "openid",
        },
        timeout=10,
    )
    assert resp.status_code == 200
    body = resp.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == aep.settings.token_lifetime_s


def test_bad_client_gets_oauth_error(aep):
    resp = requests.post(
        aep.base_url + "/ims/token/v3",
        data={"grant_type": "client_credentials", "client_id": aep.settings.client_id, "client_secret": "wrong"},
        timeout=10,
    )
    assert resp.status_code == 401
    assert resp.json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    ("drop", "override", "status", "code"),
    [
        pytest.param("Authorization", {}, 403, "403010", id="missing-token"),
        pytest.param(None, {"Authorization": "Bearer not-a-token"}, 401, "401013", id="invalid-token"),
        pytest.param("x-api-key", {}, 403, "403000", id="missing-api-key"),
        pytest.param(None, {"x-api-key": "someone-else"}, 403, "403003", id="wrong-api-key"),
        pytest.param("x-gw-ims-org-id", {}, 400, "400003", id="missing-org"),
        pytest.param(None, {"x-gw-ims-org-id": "OTHER@AdobeOrg"}, 403, "403025", id="wrong-org"),
        pytest.param("x-sandbox-name", {}, 400, "400003", id="missing-sandbox"),
        pytest.param(None, {"x-sandbox-name": "no-such-sandbox"}, 403, "403027", id="unknown-sandbox"),
    ],
)
def test_gateway_rejects(aep, drop, override, status, code):
    headers = aep.headers(override)
    if drop:
        headers.pop(drop)
    resp = requests.get(aep.base_url + CATALOG, headers=headers, timeout=10)
    assert resp.status_code == status
    assert resp.json()["error_code"] == code
    assert resp.json()["message"]


def test_expired_token_is_rejected(aep, emulator):
    aep.fetch_token()
    emulator.admin("POST", "tokens/expire", json={"token": aep.token}).raise_for_status()
    resp = requests.get(aep.base_url + CATALOG, headers=aep.headers(), timeout=10)
    assert resp.status_code == 401
    assert resp.json() == {"error_code": "401013", "message": "Oauth token is not valid"}


def test_fault_injection_429_with_retry_after(aep, emulator):
    emulator.emu.faults.configure({"rules": [{"path": "/catalog/", "first_n": 1, "rate_429": 1, "retry_after": 2}]})
    first = aep.get(CATALOG)
    assert first.status_code == 429
    assert first.headers["Retry-After"] == "2"
    assert aep.get(CATALOG).status_code != 429
