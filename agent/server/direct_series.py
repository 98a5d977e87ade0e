"""Labelled ``Counter`` and ``Histogram`` series read straight from their children, for agent/server/exposition.py.

Why: at 100 checks the per-check families hold about 3,300 series, and prometheus_client's ``collect()``
builds two ``Sample`` tuples and a label dict per series before anything is written: most of a render's
cost (docs/benchmarks.md, "Expensive endpoints vs the probes"). Reading each child's value under its
own lock, as ``collect()`` does, and pairing it with a prefix formatted once skips all of that.

This reads prometheus_client's internals (``_metrics``, ``_lock``, ``_labelnames``, a child's ``_value``,
``_buckets``, ``_sum``, ``_upper_bounds``), so it trusts nothing: it applies only to the exact ``Counter`` and
``Histogram`` classes with labels, with in-process (``MutexValue``) values and ``_created`` series off; it gives
up (``None``) on an exemplar, and on any missing attribute; and the caller checks its lines against the
encoder's own before using it for a metric (:meth:`agent.server.exposition.Format.collector`). What it yields is the
same samples, in the same order, as ``collect()`` would, as ``(key, value)`` pairs; :func:`sample_of` turns a
key into the sample's name and labels, which the caller needs only once per key (to format its prefix).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from prometheus_client import Counter, Histogram
from prometheus_client import metrics as client_metrics
from prometheus_client import values as client_values
from prometheus_client.utils import floatToGoString

Row = tuple[Hashable, float]


def go_float(value: float) -> str:
    """prometheus_client's own float formatting (untyped there)."""
    text: str = floatToGoString(value)  # type: ignore[no-untyped-call]
    return text


def applies(collector: object) -> bool:
    """Whether ``collector`` is a metric this module can read directly (checked every render: cheap)."""
    if type(collector) not in (Counter, Histogram) or client_values.ValueClass is not client_values.MutexValue:
        return False
    return bool(getattr(collector, "_labelnames", None)) and not getattr(client_metrics, "_use_created", True)


def rows(collector: Any) -> list[Row] | None:
    """The metric's samples as ``collect()`` would give them, or None when this cannot say exactly."""
    try:
        with collector._lock:
            children = list(collector._metrics.items())
        return _counter(children) if type(collector) is Counter else _histogram(children)
    except AttributeError:
        return None


def sample_of(collector: Any, key: Hashable) -> tuple[str, dict[str, str]]:
    """The name and labels of the sample behind ``key`` (a key :func:`rows` gave)."""
    assert isinstance(key, tuple)
    labelvalues, part = key
    labels = dict(zip(collector._labelnames, labelvalues, strict=True))
    if type(collector) is Counter:
        return collector._name + "_total", labels
    if isinstance(part, int):
        return collector._name + "_bucket", {**labels, "le": go_float(collector._upper_bounds[part])}
    return f"{collector._name}_{part}", labels


def _counter(children: list[tuple[tuple[str, ...], Any]]) -> list[Row] | None:
    out: list[Row] = []
    for labelvalues, child in children:
        value = child._value
        if value.get_exemplar() is not None:
            return None
        out.append(((labelvalues, "total"), value.get()))
    return out


def _histogram(children: list[tuple[tuple[str, ...], Any]]) -> list[Row] | None:
    out: list[Row] = []
    for labelvalues, child in children:
        bounds, buckets = child._upper_bounds, child._buckets
        acc = 0.0
        for i in range(len(bounds)):
            acc += buckets[i].get()
            if buckets[i].get_exemplar() is not None:
                return None
            out.append(((labelvalues, i), acc))
        out.append(((labelvalues, "count"), acc))
        if bounds[0] >= 0:
            out.append(((labelvalues, "sum"), child._sum.get()))
    return out
