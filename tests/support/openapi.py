"""Validate emulator responses against Adobe's OpenAPI specs (vendored in ``tests/openapi/``).

A response is matched to its spec operation by service base path, path template, method and status,
then its JSON body is validated with the OpenAPI 3.0 schema validator (Swagger 2.0 schemas, used by
the Schema Registry spec, validate the same way).
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from openapi_schema_validator import OAS30Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

SPEC_DIR = Path(__file__).resolve().parent.parent / "openapi"

# Service base path -> spec file.
SPECS = {
    "/data/foundation/import": "batch-ingestion.yaml",
    "/data/foundation/catalog": "catalog.yaml",
    "/data/foundation/query": "query-service.yaml",
    "/data/foundation/schemaregistry": "schema-registry.yaml",
    "/data/foundation/flowservice": "flow-service.yaml",
    "/data/foundation/export": "data-access.yaml",
    "/data/core/activation/disflowprovider": "ad-hoc-activation.yaml",
    "/data/core/ups": "segmentation.yaml",
    "/data/core": "identity-service.yaml",
}


class SpecMismatch(AssertionError):
    """The response does not match the spec."""


@cache
def _load(spec_file: str) -> dict:
    # A JSON round trip turns YAML's integer status keys into the strings JSON pointers use.
    return json.loads(json.dumps(yaml.safe_load((SPEC_DIR / spec_file).read_text()), default=str))


@cache
def _registry(spec_file: str) -> Registry:
    return Registry().with_resource(spec_file, Resource.from_contents(_load(spec_file), default_specification=DRAFT4))


def _template_regex(template: str) -> re.Pattern:
    parts = re.split(r"(\{[^}]+\})", template.rstrip("/"))
    body = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile("^" + body + "/?$")


def find_operation(path: str, method: str, spec_file: str | None = None) -> tuple[str, str, dict]:
    """``(spec_file, path_template, operation)`` for a request path such as
    ``/data/foundation/catalog/dataSets/abc``."""
    for base, file in sorted(SPECS.items(), key=lambda kv: -len(kv[0])):
        if spec_file and file != spec_file:
            continue
        if not path.startswith(base):
            continue
        rel = path[len(base) :] or "/"
        paths = _load(file).get("paths", {})
        # Prefer literal templates over parameterised ones (e.g. /dataSets/count vs /dataSets/{id}).
        candidates = sorted(paths, key=lambda t: t.count("{"))
        for template in candidates:
            if _template_regex(template).match(rel) and method.lower() in paths[template]:
                return file, template, paths[template][method.lower()]
    raise SpecMismatch(f"no spec operation for {method.upper()} {path}")


def response_schema_pointer(spec_file: str, template: str, method: str, status: int) -> str | None:
    """JSON pointer of the response body schema, or None when the spec declares no body."""
    op = _load(spec_file)["paths"][template][method.lower()]
    responses = op.get("responses", {})
    key = str(status) if str(status) in responses else ("default" if "default" in responses else None)
    if key is None:
        raise SpecMismatch(f"{method.upper()} {template} declares no {status} response (has {sorted(responses)})")
    escaped = template.replace("~", "~0").replace("/", "~1")
    base = f"/paths/{escaped}/{method.lower()}/responses/{key}"
    resp = responses[key]
    if "$ref" in resp:
        base = resp["$ref"].lstrip("#")
        resp = _resolve(spec_file, resp["$ref"])
    if "schema" in resp:  # Swagger 2.0
        return base + "/schema"
    content = resp.get("content") or {}
    for ctype in content:
        if "json" in ctype and "schema" in content[ctype]:
            return f"{base}/content/{ctype.replace('~', '~0').replace('/', '~1')}/schema"
    return None


def _resolve(spec_file: str, ref: str) -> dict:
    node = _load(spec_file)
    for part in ref.lstrip("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def validate(method: str, url: str, status: int, body, spec_file: str | None = None) -> tuple[str, str]:
    """Raise SpecMismatch unless ``body`` matches the spec's schema for this call.

    :param method: HTTP method.
    :param url: full URL or path of the request.
    :param status: response status code.
    :param body: decoded JSON body.
    :param spec_file: restrict the lookup to one spec file.
    :return: ``(spec_file, path_template)`` that validated the response.
    """
    path = urlsplit(url).path
    file, template, _ = find_operation(path, method, spec_file)
    pointer = response_schema_pointer(file, template, method, status)
    if pointer is None:
        return file, template
    validator = OAS30Validator({"$ref": f"{file}#{pointer}"}, registry=_registry(file))
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
    if errors:
        detail = "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
        raise SpecMismatch(f"{method.upper()} {template} {status} does not match {file}: {detail}")
    return file, template


def validate_response(response, spec_file: str | None = None) -> tuple[str, str]:
    """Validate a ``requests.Response`` against its spec operation."""
    body = response.json() if response.content else None
    return validate(response.request.method, response.request.url, response.status_code, body, spec_file)
