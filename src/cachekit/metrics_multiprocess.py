"""Prometheus multiprocess export: each worker copies its caches' counters into the shared files.

In a multi-process server (gunicorn), each worker calls
``start_multiprocess_export(cache)``, which copies its counters every second
into prometheus-client's multiprocess files (``PROMETHEUS_MULTIPROC_DIR``);
the process that serves ``/metrics`` sums them with ``MultiProcessCollector``.
Import these names from ``cachekit.metrics``.
"""

from __future__ import annotations

import atexit
import logging
import threading
from typing import Any

from .cache import Cache
from .errors import ConfigurationError
from .metrics import (
    _DURATION,
    _DURATION_HELP,
    _FAMILIES,
    _LABELS,
    Exported,
    _counted,
    _go_string,
    _samples,
    _value_class,
    backend_label,
)

__all__ = ["MultiprocessExporter", "export_multiprocess", "start_multiprocess_export"]

log = logging.getLogger("cachekit.metrics")


class _MultiprocessWriter:
    """Copies one cache's counters, as absolute values, into this process's multiprocess files."""

    def __init__(self, cache: Cache) -> None:
        self._cache = cache
        self._labels = (cache.namespace, backend_label(cache.backend))
        self._values: dict[tuple[str, tuple[str, ...]], Any] = {}
        self._lock = threading.Lock()

    def _value(
        self,
        metric: str,
        sample: str,
        names: tuple[str, ...],
        values: tuple[str, ...],
        typ: str,
        doc: str,
    ) -> Any:
        key = (sample, values)
        value = self._values.get(key)
        if value is None:
            mode = "livemax" if typ == "gauge" else ""
            value = self._values[key] = _value_class()(
                typ, metric, sample, names, values, doc, multiprocess_mode=mode
            )
        return value

    def write(self) -> None:
        with self._lock:
            for name, extra, number in _samples(self._cache):
                typ, doc, extra_names = _FAMILIES[name]
                sample = name + "_total" if typ == "counter" else name
                self._value(
                    name, sample, (*_LABELS, *extra_names), (*self._labels, *extra), typ, doc
                ).set(float(number))
            hist = self._cache.load_duration
            counts, total = hist.snapshot()
            names = (*_LABELS, "le")
            # buckets stay per-bucket here: MultiProcessCollector accumulates them
            for bound, count in zip([*hist.buckets, float("inf")], counts, strict=True):
                self._value(
                    _DURATION,
                    _DURATION + "_bucket",
                    names,
                    (*self._labels, _go_string(bound)),
                    "histogram",
                    _DURATION_HELP,
                ).set(float(count))
            self._value(
                _DURATION, _DURATION + "_sum", _LABELS, self._labels, "histogram", _DURATION_HELP
            ).set(total)


_WRITERS: dict[int, _MultiprocessWriter] = {}


def export_multiprocess(cache: Exported) -> None:
    """Write a cache's or repository's counters now into this process's multiprocess files."""
    cache = _counted(cache)
    writer = _WRITERS.get(id(cache))
    if writer is None or writer._cache is not cache:
        writer = _WRITERS[id(cache)] = _MultiprocessWriter(cache)
    writer.write()


class MultiprocessExporter:
    """A daemon thread that calls ``export_multiprocess`` every ``interval`` seconds."""

    def __init__(self, caches: list[Exported], interval: float) -> None:
        self.caches = [_counted(c) for c in caches]
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="cachekit-multiprocess-export", daemon=True
        )

    def start(self) -> MultiprocessExporter:
        """Export once now, then every ``interval`` seconds, and once more at exit."""
        self.export()
        self._thread.start()
        atexit.register(self.stop)
        return self

    def export(self) -> None:
        """Write every cache's counters now."""
        for cache in self.caches:
            export_multiprocess(cache)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.export()
            except Exception:  # a full disk must not kill the worker's export for good
                log.exception("cachekit: multiprocess metrics export failed")

    def stop(self) -> None:
        """Stop the thread and write the final counts."""
        if not self._stop.is_set():
            self._stop.set()
            if self._thread.is_alive():
                self._thread.join()
            atexit.unregister(self.stop)
            self.export()


def start_multiprocess_export(*caches: Exported, interval: float = 1.0) -> MultiprocessExporter:
    """In a worker process, keep ``caches``' counters in the multiprocess files (every ``interval`` s)."""  # noqa: E501
    if not caches:
        raise ConfigurationError("start_multiprocess_export needs at least one cache")
    if interval <= 0:
        raise ConfigurationError("interval must be > 0 seconds")
    _value_class()  # fail now, not in the thread, when the directory is not configured
    return MultiprocessExporter(list(caches), interval).start()
