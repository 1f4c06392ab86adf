"""
Operators for Adobe Experience Platform, one module per service.

The operators the DAG uses are importable from here as before the split.
"""

from aep_hooks.operators.catalog import AEPEnsureDatasetOperator
from aep_hooks.operators.flow_service import AEPActivateAudiencesOperator, AEPDatasetExportOperator
from aep_hooks.operators.ingestion import AEPBatchIngestOperator
from aep_hooks.operators.query_service import AEPQueryOperator
from aep_hooks.operators.segmentation import AEPAudienceOperator

__all__ = [
    "AEPActivateAudiencesOperator",
    "AEPAudienceOperator",
    "AEPBatchIngestOperator",
    "AEPDatasetExportOperator",
    "AEPEnsureDatasetOperator",
    "AEPQueryOperator",
]
