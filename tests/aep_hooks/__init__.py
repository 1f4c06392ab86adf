"""Tests of the AEP provider package."""
