"""The pfcon-compatible REST API on Litestar."""
