"""Auth adapters."""
