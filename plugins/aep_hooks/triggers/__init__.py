"""
Triggers that wait for AEP jobs, one module per service.

The four names below are aliases of the classes' new homes. A task deferred before the split was
stored with the classpath ``aep_hooks.triggers.<Trigger>``; the triggerer imports that path to
resume it, so the aliases stay for one release after the split, and
``tests/aep_hooks/triggers/test_old_classpaths.py`` proves they work. New deferrals store the new paths.
"""

from aep_hooks.triggers.flow_service import FlowRunTrigger
from aep_hooks.triggers.ingestion import BatchStatusTrigger
from aep_hooks.triggers.query_service import QueryStatusTrigger
from aep_hooks.triggers.segmentation import SegmentJobTrigger

__all__ = ["BatchStatusTrigger", "FlowRunTrigger", "QueryStatusTrigger", "SegmentJobTrigger"]
