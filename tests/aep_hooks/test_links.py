"""Extra links to the AEP UI, built from the ids the operators push to XCom."""

from __future__ import annotations

from unittest import mock

from aep_hooks.links import AEP_UI_CONTEXT_KEY, AEPBatchLink, AEPDatasetLink, AEPQueryLink

ORG = "TEST0000000000000000000@AdobeOrg"


def test_links_point_to_the_aep_ui_from_xcom():
    values = {AEPBatchLink.key: "b1", AEPDatasetLink.key: "d1", AEP_UI_CONTEXT_KEY: {"org_id": ORG, "sandbox": "dev"}}
    with mock.patch("aep_hooks.links.XCom.get_value", side_effect=lambda *, key, ti_key: values.get(key)):
        assert AEPBatchLink().get_link(None, ti_key=None) == (
            f"https://experience.adobe.com/#/@{ORG}/sname:dev/platform/dataset/activity/batches/b1"
        )
        assert AEPDatasetLink().get_link(None, ti_key=None).endswith("/sname:dev/platform/dataset/browse/d1")
        assert AEPQueryLink().get_link(None, ti_key=None) == ""
