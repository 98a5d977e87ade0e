"""readiness-agent: a sidecar that reports a pod ready only once its Redis is *stably* usable."""

__version__ = "0.1.0"
