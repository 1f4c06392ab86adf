"""Tests of the AEP operators, one module per operator module."""
