"""Earlier import path of :mod:`storeroom.contrib.otel`, kept working."""

from storeroom.contrib.otel import OpenTelemetrySubscriber

__all__ = ["OpenTelemetrySubscriber"]
