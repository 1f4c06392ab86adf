"""Tests of the AEP triggers, one module per trigger module."""
