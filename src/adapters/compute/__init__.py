"""Compute adapters."""
