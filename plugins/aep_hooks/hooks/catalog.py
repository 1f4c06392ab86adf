"""
Catalog: datasets and the batch records (status, metrics, errors) ingestion leaves there.

.. seealso:: https://experienceleague.adobe.com/en/docs/experience-platform/catalog/api/getting-started
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aep_hooks.exceptions import AEPError
from aep_hooks.hooks.base import item_path
from aep_hooks.hooks.rest import AEPRestHook

CATALOG = "/data/foundation/catalog"
DATASETS = f"{CATALOG}/dataSets"
BATCHES = f"{CATALOG}/batches"


def unwrap_catalog_item(body: dict, resource_id: str) -> dict:
    """Catalog answers ``{id: doc}``; return the doc with its ``id``."""
    if resource_id not in body:
        raise AEPError(f"Catalog answer has no entry for {resource_id}")
    return {**body[resource_id], "id": resource_id}


class AEPCatalogHook(AEPRestHook):
    """Catalog calls. Arguments as :class:`~aep_hooks.hooks.base.AEPBaseHook`."""

    def iter_catalog(
        self, path: str, params: dict[str, Any] | None = None, page_size: int = 100
    ) -> Iterator[tuple[str, dict]]:
        """
        Walk a Catalog list (``limit``/``start`` offsets) to the end, yielding ``(id, doc)``.

        :param path: the list's path, e.g. ``DATASETS``.
        :param params: filters (``name``, ``dataSet``, ``status``, ``orderBy``...).
        :param page_size: ``limit`` per page, 1 to 100.
        """
        if not 1 <= page_size <= 100:
            raise ValueError("page_size must be between 1 and 100")
        start = 0
        while True:
            page = self.get_json(path, params={**(params or {}), "limit": page_size, "start": start}) or {}
            for resource_id, doc in page.items():
                yield resource_id, {**doc, "id": resource_id}
            if len(page) < page_size:
                return
            start += len(page)

    def get_dataset(self, dataset_id: str) -> dict:
        """
        Return a dataset, unwrapped from Catalog's ``{id: doc}``, with its ``id``.

        :param dataset_id: the dataset id.
        """
        return unwrap_catalog_item(self.get_json(item_path(DATASETS, dataset_id)), dataset_id)

    def find_datasets(self, **params: Any) -> dict[str, dict]:
        """
        Return the datasets matching Catalog filters, keyed by id.

        :param params: Catalog filters, e.g. ``name="scores"`` or ``property="name~^propensity"``.
        """
        return dict(self.iter_catalog(DATASETS, params))

    def create_dataset(self, body: dict) -> str:
        """
        Create a dataset and return its id (never retried on 5xx: look it up by name first).

        :param body: ``{name, schemaRef, fileDescription?, tags?}``.
        """
        created = self.post_json(DATASETS, body)
        return created[0].rsplit("/", 1)[-1]

    def patch_dataset(self, dataset_id: str, ops: list[dict]) -> None:
        """
        Apply a JSON Patch to a dataset (e.g. enable it for Profile).

        :param dataset_id: the dataset id.
        :param ops: JSON Patch operations.
        """
        self.request(
            "PATCH", item_path(DATASETS, dataset_id), json=ops, headers={"Content-Type": "application/json-patch+json"}
        )

    def get_batch(self, batch_id: str) -> dict:
        """
        Return a batch's Catalog record (status, metrics, errors), with its ``id``.

        :param batch_id: the batch id.
        """
        return unwrap_catalog_item(self.get_json(item_path(BATCHES, batch_id)), batch_id)

    def find_batches(self, **params: Any) -> dict[str, dict]:
        """
        Return the batches matching Catalog filters, keyed by id.

        :param params: Catalog filters, e.g. ``dataSet=<id>``, ``status="success"``.
        """
        return dict(self.iter_catalog(BATCHES, params))
