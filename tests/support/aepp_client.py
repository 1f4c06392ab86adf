"""Adobe's own Python client, ``aepp``, pointed at the emulator (a second client for the tests).

aepp knows only Adobe's hosts: after ``aepp.configure`` its module-level endpoints are moved to the
emulator, which serves IMS and Platform on one host.
"""

from __future__ import annotations

import aepp
from aepp import config as aepp_config


def configure_aepp(url: str, settings, sandbox: str) -> aepp.ConnectObject:
    """Configure aepp (OAuth server-to-server, as a customer's script would) for the emulator.

    :param url: the emulator's base URL.
    :param settings: the emulator's settings (org, client credentials).
    :param sandbox: the sandbox every call goes to.
    :return: the ConnectObject aepp's classes take as ``config``.
    """
    instance = aepp.configure(
        org_id=settings.org_id,
        client_id=settings.client_id,
        secret=settings.client_secret,
        scopes="openid,AdobeID,read_organizations",
        sandbox=sandbox,
        connectInstance=True,
    )
    aepp_config.endpoints["global"] = url
    aepp_config.endpoints["streaming"]["inlet"] = f"{url}/data/core/edge"
    for target in (aepp_config.config_object, instance.getConfigObject()):
        target["imsEndpoint"] = url
        target["oauthTokenEndpointV1"] = f"{url}/ims/token/v1"
        target["oauthTokenEndpointV2"] = f"{url}/ims/token/v3"
    instance.globalEndpoint = url
    instance.imsEndpoint = url
    instance.oauthEndpointV2 = f"{url}/ims/token/v3"
    return instance
