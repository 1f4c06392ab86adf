"""Each AEP endpoint path is spelled once in the provider, in its service's hook module.

The sync hook, the async hook and the triggers build a path from the one constant or function that
spells it; a second spelling is how a trigger once polled a path the hook no longer called.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

PROVIDER = Path(__file__).resolve().parents[2] / "plugins" / "aep_hooks"
# Rooted ("/data/...", "/runs") or built on an upper-case path constant ("{CATALOG}/batches").
PATH_LIKE = re.compile(r"^(\{[A-Z][A-Z0-9_]*\})?/[A-Za-z{]")


def _text(node: ast.AST) -> str | None:
    """A literal's text, its interpolations as ``{NAME}`` for constants and ``{}`` for the rest."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(_text(value) or "{}" for value in node.values)
    if isinstance(node, ast.FormattedValue):
        return f"{{{node.value.id}}}" if isinstance(node.value, ast.Name) and node.value.id.isupper() else None
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text(node.left), _text(node.right)
        return left + right if left is not None and right is not None else None
    if isinstance(node, ast.Name) and node.id.isupper():
        return f"{{{node.id}}}"
    return None


def path_literals(source: str) -> list[tuple[str, int]]:
    """``(path, line)`` of every endpoint-path literal in ``source`` (JSON Patch ``"path"`` values are not endpoints)."""
    tree = ast.parse(source)
    patch_paths = {
        id(value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Dict)
        for key, value in zip(node.keys, node.values, strict=True)
        if isinstance(key, ast.Constant) and key.value == "path"
    }
    inner = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, (ast.JoinedStr, ast.BinOp))
        for child in ast.walk(node)
        if child is not node
    }
    found = []
    for node in ast.walk(tree):
        if id(node) in inner or id(node) in patch_paths or isinstance(node, (ast.Name, ast.FormattedValue)):
            continue
        text = _text(node)
        if text is not None and PATH_LIKE.match(text):
            found.append((text, node.lineno))
    return found


def provider_paths() -> dict[str, list[str]]:
    places = defaultdict(list)
    for module in sorted(PROVIDER.rglob("*.py")):
        for text, line in path_literals(module.read_text()):
            places[text].append(f"{module.relative_to(PROVIDER)}:{line}")
    return places


def test_every_endpoint_path_is_spelled_once():
    places = provider_paths()

    assert "/data/foundation/catalog" in places, "the scan found no path at all"
    assert {path: where for path, where in places.items() if len(where) > 1} == {}


def test_endpoint_paths_are_spelled_in_the_hooks_only():
    places = provider_paths()

    assert [where for where in sum(places.values(), []) if not where.startswith("hooks/")] == []


def test_the_scan_sees_a_path_spelled_again():
    """The check itself: the spellings the triggers used before the split are caught, JSON Patch paths are not."""
    source = """
CATALOG = "/data/foundation/catalog"
def get_batch(batch_id):
    return get_json(f"{CATALOG}/batches/{batch_id}")
async def fetch(self):
    return await hook.get_json(f"{CATALOG}/batches/{self.resource_id}")
def runs():
    return iter_flow_service("/runs") or get_json(FLOW_SERVICE + "/runs")
PATCH = [{"op": "add", "path": "/tags/unifiedProfile", "value": ["enabled:true"]}]
"""
    assert sorted(path_literals(source)) == [
        ("/data/foundation/catalog", 2),
        ("/runs", 8),
        ("{CATALOG}/batches/{}", 4),
        ("{CATALOG}/batches/{}", 6),
        ("{FLOW_SERVICE}/runs", 8),
    ]
