"""Tests of what the provider's modules share."""
