"""Benchmarks for the readiness agent: ``python -m bench`` (see ``bench/__main__.py`` and docs/benchmarks.md).

A package rather than loose scripts so the four figures share one way of starting, timing and killing things
(``bench.common``) and can run as one command whose numbers are comparable with each other.
"""
