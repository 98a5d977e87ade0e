"""Runnable examples of readiness-agent in front of a real application (not installed with the package)."""
