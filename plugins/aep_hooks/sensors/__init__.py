"""Sensors for Adobe Experience Platform; ``AEPJobSensor`` is importable from here as before the split."""

from aep_hooks.sensors.jobs import AEPJobSensor

__all__ = ["AEPJobSensor"]
