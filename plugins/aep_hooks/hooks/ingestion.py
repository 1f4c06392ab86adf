"""
Batch Ingestion: create a batch, upload its files, signal completion.

.. seealso:: https://experienceleague.adobe.com/en/docs/experience-platform/ingestion/batch/api-overview
"""

from __future__ import annotations

from urllib.parse import quote

from aep_hooks.hooks.base import item_path
from aep_hooks.hooks.rest import AEPRestHook

INGESTION = "/data/foundation/import"
IMPORT_BATCHES = f"{INGESTION}/batches"


class AEPIngestionHook(AEPRestHook):
    """Batch Ingestion calls. Arguments as :class:`~aep_hooks.hooks.base.AEPBaseHook`."""

    def create_batch(self, body: dict) -> dict:
        """
        Create a batch (never retried on 5xx: look it up by ``externalId`` first).

        :param body: ``{datasetId, inputFormat, externalId?, replay?, tags?...}``.
        """
        return self.post_json(IMPORT_BATCHES, body)

    def upload_file(self, batch_id: str, dataset_id: str, file_name: str, data: bytes) -> None:
        """
        Upload one file (at most 256 MB) to a batch; re-sending the same name overwrites it.

        :param batch_id: the batch id.
        :param dataset_id: the batch's dataset id.
        :param file_name: the file's name in the batch (may contain ``/``).
        :param data: the file's bytes.
        """
        self.request(
            "PUT",
            f"{item_path(IMPORT_BATCHES, batch_id)}/datasets/{dataset_id}/files/{quote(file_name, safe='/=')}",
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )

    def complete_batch(self, batch_id: str) -> None:
        """
        Signal that all files are uploaded (documented idempotent, so retried like a read).

        :param batch_id: the batch id.
        """
        self.request("POST", item_path(IMPORT_BATCHES, batch_id), params={"action": "COMPLETE"}, idempotent=True)
