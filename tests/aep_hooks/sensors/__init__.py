"""Tests of the AEP sensors."""
