"""The WebSocket backend from docs/origin.md, its platform, and the 1011 race between them.

``app`` is the backend, ``platform_sim`` plays kubelet and the load balancer, ``race`` runs the scenario with
and without readiness-agent (``python -m examples.websocket_app.race``).
"""
