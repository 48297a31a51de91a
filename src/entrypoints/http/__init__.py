"""The pfcon-compatible REST API on Litestar."""

from ..._lean import hidden

# Litestar loads its pydantic and attrs integrations if present (pfcon._lean); it needs
# PyYAML (its YAML OpenAPI route), which stays.
with hidden(("rich", "pydantic", "attrs", "attr")):
    import litestar  # noqa: F401
