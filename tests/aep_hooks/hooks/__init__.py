"""Tests of the AEP hooks, one module per hook module."""
