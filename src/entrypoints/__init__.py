"""Entrypoints: HTTP (Litestar) and CLI."""
