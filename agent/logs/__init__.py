"""Logs: formats, a writer that never blocks the process, and the verdict's own log lines."""
