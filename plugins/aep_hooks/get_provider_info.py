"""Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations


def get_provider_info():
    return {
        "package-name": "aep-propensity",
        "name": "Adobe Experience Platform",
        "description": "Hooks, operators, triggers and sensors for `Adobe Experience Platform <https://experienceleague.adobe.com/en/docs/experience-platform>`__.\n",
        "versions": ["0.1.0"],
        "integrations": [
            {
                "integration-name": "Adobe Experience Platform",
                "external-doc-url": "https://experienceleague.adobe.com/en/docs/experience-platform",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Adobe Experience Platform",
                "python-modules": [
                    "aep_hooks.hooks.aep",
                    "aep_hooks.hooks.base",
                    "aep_hooks.hooks.rest",
                    "aep_hooks.hooks.schema_registry",
                    "aep_hooks.hooks.catalog",
                    "aep_hooks.hooks.ingestion",
                    "aep_hooks.hooks.query_service",
                    "aep_hooks.hooks.flow_service",
                    "aep_hooks.hooks.segmentation",
                ],
            }
        ],
        "operators": [
            {
                "integration-name": "Adobe Experience Platform",
                "python-modules": [
                    "aep_hooks.operators.catalog",
                    "aep_hooks.operators.ingestion",
                    "aep_hooks.operators.query_service",
                    "aep_hooks.operators.flow_service",
                    "aep_hooks.operators.segmentation",
                ],
            }
        ],
        "triggers": [
            {
                "integration-name": "Adobe Experience Platform",
                "python-modules": [
                    "aep_hooks.triggers.ingestion",
                    "aep_hooks.triggers.query_service",
                    "aep_hooks.triggers.flow_service",
                    "aep_hooks.triggers.segmentation",
                ],
            }
        ],
        "sensors": [{"integration-name": "Adobe Experience Platform", "python-modules": ["aep_hooks.sensors.jobs"]}],
        "connection-types": [
            {
                "hook-class-name": "aep_hooks.hooks.aep.AEPHook",
                "hook-name": "Adobe Experience Platform",
                "connection-type": "aep",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port"],
                    "relabeling": {"host": "Platform URL", "login": "Client ID", "password": "Client secret"},
                    "placeholders": {
                        "host": "https://platform.adobe.io",
                        "login": "OAuth server-to-server client id",
                        "password": "OAuth server-to-server client secret",
                    },
                },
                "conn-fields": {
                    "org_id": {
                        "label": "IMS org ID",
                        "description": "The organisation id, sent as x-gw-ims-org-id (...@AdobeOrg).",
                        "schema": {"type": "string"},
                    },
                    "sandbox": {
                        "label": "Sandbox",
                        "description": "Sandbox name, sent as x-sandbox-name.",
                        "schema": {"type": ["string", "null"], "default": "prod"},
                    },
                    "ims_url": {
                        "label": "IMS token URL",
                        "description": "OAuth server-to-server token endpoint.",
                        "schema": {
                            "type": ["string", "null"],
                            "default": "https://ims-na1.adobelogin.com/ims/token/v3",
                        },
                    },
                    "scopes": {
                        "label": "Scopes",
                        "description": "Comma-separated OAuth scopes of the Developer Console project.",
                        "schema": {
                            "type": ["string", "null"],
                            "default": "openid,AdobeID,read_organizations,additional_info.projectedProductContext,session",
                        },
                    },
                    "qs_sslmode": {
                        "label": "Query Service sslmode",
                        "description": "libpq sslmode for Query Service; AEP needs require or stronger.",
                        "schema": {
                            "type": ["string", "null"],
                            "enum": ["disable", "allow", "prefer", "require", "verify-ca", "verify-full", None],
                            "default": "require",
                        },
                    },
                },
            }
        ],
        "extra-links": [
            "aep_hooks.links.AEPBatchLink",
            "aep_hooks.links.AEPDatasetLink",
            "aep_hooks.links.AEPQueryLink",
            "aep_hooks.links.AEPAudienceLink",
            "aep_hooks.links.AEPFlowRunLink",
        ],
    }
