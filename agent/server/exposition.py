"""The ``/metrics`` body, byte for byte what prometheus_client's encoders write, at a fraction of their cost.

Why: with 100 checks the registry holds about 3,400 samples, and prometheus_client spends most of a render
building ``Sample`` tuples and formatting each sample's name and labels again (escaping, sorting, quoting),
although they are the same on every scrape: only the values change. So each family's header lines and each
sample's ``name{labels} `` prefix are formatted once, by the very encoder the scraper negotiated
(``choose_encoder``: text or OpenMetrics, its escaping and version), and kept; the per-check Counter and
Histogram series are read straight from their children (agent/server/direct_series.py), and those lines are used
only once they have matched the encoder's own. A render is then one value lookup and one ``floatToGoString``
per sample. A family the shortcut cannot reproduce exactly (timestamps, exemplars, native histograms, the text
format's ``_created``/``_gsum``/``_gcount`` blocks, a value-less sample) is written by the encoder itself.
tests/test_scrape_cost.py holds the output equal to the encoder's.

Not thread-safe: one :class:`Exposition` is used from one thread at a time (the render worker).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Sample

from agent.server import direct_series
from agent.server.direct_series import go_float as _go

Encoder = Callable[[Collector], bytes]
MEMO_LIMIT = 50_000  # entries per format: far above the agent's series count; a runaway label set is dropped


_PROBE = 0.0
_PROBE_TEXT = " " + _go(_PROBE) + "\n"
_TEXT_BLOCKS = ("_created", "_gsum", "_gcount")  # the text encoder moves these samples after the family
VERIFY_TRIES = 3  # a direct read must match the encoder once; a counter moving in between spoils a try


class _Families(Collector):
    """A collector over given families, to hand them to an encoder."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


def _empty(family: Metric) -> Metric:
    return Metric(family.name, family.documentation, family.type, family.unit)


def _collectors(registry: Collector) -> list[Collector] | None:
    """What ``registry.collect()`` walks, in its order; None for anything but a plain registry without target
    info (then the registry's own ``collect()`` is used)."""
    if type(registry) is not CollectorRegistry:
        return None
    try:
        with registry._lock:
            if registry._target_info:
                return None
            return list(registry._collector_to_names)
    except AttributeError:
        return None


class Format:
    """One negotiated format (an encoder from ``choose_encoder``) with its memo of headers and prefixes."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.trailer = encoder(_Families([])).decode()  # "# EOF\n" for OpenMetrics, "" for text
        self.text = not self.trailer
        self._headers: dict[tuple[str, str, str, str], str] = {}
        self._prefixes: dict[tuple[str, str, tuple[tuple[str, str], ...]], str] = {}
        self._values: dict[float, str] = {}
        self._direct: dict[Collector, int | bool] = {}  # True: verified; False: refused; n: tries failed
        self._direct_prefixes: dict[Collector, dict[Hashable, str]] = {}

    def _encode(self, family: Metric) -> str:
        body = self.encoder(_Families([family])).decode()
        return body[: len(body) - len(self.trailer)]

    def _header(self, family: Metric) -> str:
        key = (family.name, family.type, family.documentation, family.unit)
        header = self._headers.get(key)
        if header is None:
            if len(self._headers) > MEMO_LIMIT:
                self._headers.clear()
            header = self._headers[key] = self._encode(_empty(family))
        return header

    def _prefix(self, family: Metric, header: str, sample: Sample) -> str | None:
        key = (family.name, sample.name, tuple(sample.labels.items()))
        prefix = self._prefixes.get(key)
        if prefix is None:
            one = _empty(family)
            one.samples = [sample._replace(value=_PROBE)]
            line = self._encode(one)
            if not line.startswith(header) or not line.endswith(_PROBE_TEXT):
                return None
            if len(self._prefixes) > MEMO_LIMIT:
                self._prefixes.clear()
            prefix = self._prefixes[key] = line[len(header): len(line) - len(_PROBE_TEXT) + 1]
        return prefix

    def _value(self, value: float) -> str:
        if value == 0 and math.copysign(1.0, value) < 0:  # -0.0 == 0.0: not memoised, "-0.0" is not "0.0"
            return _go(value) + "\n"
        text = self._values.get(value)
        if text is None:
            if len(self._values) > MEMO_LIMIT:
                self._values.clear()
            text = self._values[value] = _go(value) + "\n"
        return text

    def family(self, family: Metric, out: list[str]) -> None:
        """Append ``family``'s lines to ``out``: ``prefix value`` per sample, or the encoder's own lines."""
        header = self._header(family)
        lines = [header]
        blocks = {family.name + suffix for suffix in _TEXT_BLOCKS} if self.text else set()
        for sample in family.samples:
            simple = (sample.timestamp is None and sample.exemplar is None and sample.value is not None
                      and sample.native_histogram is None and sample.name not in blocks)
            prefix = self._prefix(family, header, sample) if simple else None
            if prefix is None:
                out.append(self._encode(family))
                return
            lines.append(prefix + self._value(sample.value))
        out.extend(lines)

    def collector(self, collector: Any, out: list[str]) -> bool:
        """Append a labelled Counter's or Histogram's lines read directly (agent/server/direct_series.py); False when
        that does not apply. Until the direct lines once equal the encoder's, the encoder's are the ones used."""
        state = self._direct.get(collector, 0)
        if state is False or not direct_series.applies(collector):
            return False
        rows = direct_series.rows(collector)
        if rows is None:
            return False
        family = Metric(collector._name, collector._documentation, collector._type, collector._unit)
        header = self._header(family)
        prefixes = self._direct_prefixes.setdefault(collector, {})
        lines = [header]
        for key, value in rows:
            prefix = prefixes.get(key)
            if prefix is None:
                name, labels = direct_series.sample_of(collector, key)
                prefix = self._prefix(family, header, Sample(name, labels, value))
                if prefix is None:
                    self._direct[collector] = False
                    return False
                if len(prefixes) > MEMO_LIMIT:
                    prefixes.clear()
                prefixes[key] = prefix
            lines.append(prefix + self._value(value))
        if state is not True:
            encoded: list[str] = []
            for one in collector.collect():
                self.family(one, encoded)
            if "".join(encoded) != "".join(lines):
                self._direct[collector] = state + 1 if state + 1 < VERIFY_TRIES else False
                out.extend(encoded)
                return True
            self._direct[collector] = True
        out.extend(lines)
        return True

    def render(self, registry: Collector) -> bytes:
        out: list[str] = []
        collectors = _collectors(registry)
        for collector in collectors if collectors is not None else [registry]:
            if collectors is None or not self.collector(collector, out):
                for family in collector.collect():
                    self.family(family, out)
        out.append(self.trailer)
        return "".join(out).encode("utf-8")


class Exposition:
    """The registry's exposition in each format asked for (keyed by content type, at most ``limit`` formats)."""

    def __init__(self, registry: Collector, limit: int = 8) -> None:
        self.registry = registry
        self.limit = limit
        self._formats: dict[str, Format] = {}

    def render(self, content_type: str, encoder: Encoder) -> bytes:
        """The body for ``content_type`` as ``encoder`` would write it."""
        fmt = self._formats.pop(content_type, None) or Format(encoder)
        self._formats[content_type] = fmt  # most recently used last
        while len(self._formats) > self.limit:
            del self._formats[next(iter(self._formats))]
        return fmt.render(self.registry)
