"""Adapters: one per scheduler, storage mode and auth scheme."""
