"""The OpenTelemetry subscriber, with the SDK's in-memory exporters."""

from __future__ import annotations

import pytest

pytest.importorskip("opentelemetry.sdk", reason="opentelemetry-sdk is part of the test extra")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from storeroom import ObjectNotFound, ObstoreBackend, events
from storeroom.contrib.otel import OpenTelemetrySubscriber


def test_spans_and_metrics_per_operation() -> None:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    subscriber = OpenTelemetrySubscriber(tracer_provider, MeterProvider(metric_readers=[reader]))
    backend = ObstoreBackend("otel", "memory://")
    with events.subscribed(subscriber):
        backend.put("a.bin", b"x" * 100)
        backend.get("a.bin")
        with pytest.raises(ObjectNotFound):
            backend.head("nope.bin")
    finished = spans.get_finished_spans()
    assert [s.name for s in finished] == ["storeroom.put", "storeroom.get", "storeroom.head"]
    assert finished[0].attributes["storeroom.size"] == 100
    assert finished[2].status.status_code.name == "ERROR"
    data = reader.get_metrics_data()
    points = {
        m.name: m.data.data_points
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    assert sum(p.value for p in points["storeroom.operation.bytes"]) == 200
    assert sum(p.value for p in points["storeroom.operation.errors"]) == 1
