"""OpenTelemetry for storage events: a span and metrics per operation (extra ``otel``).

::

    from storeroom import events
    from storeroom.contrib.otel import OpenTelemetrySubscriber

    events.subscribe(OpenTelemetrySubscriber())

Spans are named ``storeroom.<operation>`` and carry the backend key, path, size and attempts;
failures set the span status to error. Metrics: ``storeroom.operation.duration`` (histogram,
seconds), ``storeroom.operation.bytes`` (counter) and ``storeroom.operation.errors``
(counter), each with ``storeroom.operation`` and ``storeroom.backend`` attributes.
"""

from __future__ import annotations

import importlib.util
import time
from typing import Any

from storeroom.events import StorageEvent

__all__ = ["OpenTelemetrySubscriber"]

_INSTALL = "storeroom.contrib.otel needs opentelemetry-api: pip install 'storeroom[otel]'"
if importlib.util.find_spec("opentelemetry") is None:  # pragma: no cover - environment
    raise ImportError(_INSTALL)

from opentelemetry import metrics, trace  # noqa: E402 - after the check that explains it
from opentelemetry.trace import Status, StatusCode  # noqa: E402


class OpenTelemetrySubscriber:
    """Turns each :class:`StorageEvent` into a span and metric points."""

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        self.tracer = trace.get_tracer("storeroom", tracer_provider=tracer_provider)
        meter = metrics.get_meter("storeroom", meter_provider=meter_provider)
        self.duration = meter.create_histogram(
            "storeroom.operation.duration", unit="s", description="Storage operation time"
        )
        self.bytes = meter.create_counter(
            "storeroom.operation.bytes", unit="By", description="Bytes written or read"
        )
        self.errors = meter.create_counter(
            "storeroom.operation.errors", description="Failed storage operations"
        )

    def __call__(self, event: StorageEvent) -> None:
        labels = {"storeroom.operation": event.operation, "storeroom.backend": event.backend}
        end = time.time_ns()
        start = end - int(event.duration * 1e9)
        span = self.tracer.start_span(f"storeroom.{event.operation}", start_time=start)
        span.set_attribute("storeroom.backend", event.backend)
        span.set_attribute("storeroom.path", event.path)
        span.set_attribute("storeroom.attempts", event.attempts)
        if event.size is not None:
            span.set_attribute("storeroom.size", event.size)
        if event.error is not None:
            span.set_status(Status(StatusCode.ERROR, event.error))
        span.end(end_time=end)
        self.duration.record(event.duration, labels)
        if event.size is not None and event.operation in ("put", "get"):
            self.bytes.add(event.size, labels)
        if event.error is not None:
            self.errors.add(1, labels)
