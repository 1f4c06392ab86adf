"""
Hooks for Adobe Experience Platform, one module per service on a shared base.

``AEPHook`` (the ``aep`` connection type's hook), ``AEPAsyncHook`` (triggers) and
``AEPQueryServiceHook`` (SQL over the PostgreSQL wire) are importable from here as before the split.
"""

from aep_hooks.hooks.aep import AEPHook
from aep_hooks.hooks.query_service import AEPQueryServiceHook
from aep_hooks.hooks.rest import AEPAsyncHook

__all__ = ["AEPAsyncHook", "AEPHook", "AEPQueryServiceHook"]
