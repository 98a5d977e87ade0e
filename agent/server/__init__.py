"""The HTTP surface: probes, /status, /metrics, /watch and /drain, and the limits that keep it alive."""
