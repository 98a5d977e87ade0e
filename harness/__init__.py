"""The test harness shared by the test suite, the benchmarks and the examples (never shipped in the wheel).

Real processes and the faults they can be put in: ``redis_server`` (redis-server and its fault recipes),
``fault_proxy`` (network faults), ``redis_topology`` (Sentinel and Cluster), ``tls`` (test-time CAs and a TLS
redis-server), ``hostile_redis`` and ``hostile_http`` (peers that misbehave on purpose), the stand-ins
``kube_api`` and ``metadata_server``, ``agent_process`` (the agent as a child), ``readyz_sampler`` (what a
prober sees) and ``wait`` (the one way to wait for a fact). Nothing here imports pytest: pytest-only pieces
(fixtures, log capture, the fault-matrix table, stubs) live in ``tests/support``.
"""
