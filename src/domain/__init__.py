"""The framework-free core: jobs, their lifecycle, and the ports it needs."""
