"""The otel extra: storage events become spans and metric points through the OpenTelemetry API.

Only opentelemetry-api is installed (no SDK), so this program gives the subscriber a tracer
and a meter provider of its own, written against the API's interfaces, that keep what they
receive.
"""

from opentelemetry import metrics, trace
from opentelemetry.metrics import NoOpCounter, NoOpHistogram, NoOpMeter

from storeroom import FileObject, StorageRegistry, events
from storeroom.backends.obstore import ObstoreBackend
from storeroom.contrib.otel import OpenTelemetrySubscriber

spans: list[tuple[str, dict[str, object]]] = []
points: list[tuple[str, float, dict[str, object]]] = []


class KeptSpan(trace.NonRecordingSpan):
    def __init__(self, name: str) -> None:
        super().__init__(trace.INVALID_SPAN_CONTEXT)
        self.name = name
        self.attributes: dict[str, object] = {}

    def set_attribute(self, key: str, value: object) -> None:
        self.attributes[key] = value

    def end(self, end_time: int | None = None) -> None:
        spans.append((self.name, self.attributes))


class KeptTracer(trace.NoOpTracer):
    def start_span(self, name: str, *args: object, **kwargs: object) -> trace.Span:
        return KeptSpan(name)


class KeptTracerProvider(trace.NoOpTracerProvider):
    def get_tracer(self, *args: object, **kwargs: object) -> trace.Tracer:
        return KeptTracer()


class KeptInstrument:
    """Keeps the points recorded on an instrument, under the instrument's name."""

    def __init__(self, name: str, **kwargs: str) -> None:
        super().__init__(name, **kwargs)  # type: ignore[call-arg]
        self.kept_name = name

    def keep(self, amount: float, attributes: object) -> None:
        points.append((self.kept_name, amount, dict(attributes or {})))  # type: ignore[call-overload]


class KeptHistogram(KeptInstrument, NoOpHistogram):
    def record(self, amount: float, attributes: object = None, context: object = None) -> None:
        self.keep(amount, attributes)


class KeptCounter(KeptInstrument, NoOpCounter):
    def add(self, amount: float, attributes: object = None, context: object = None) -> None:
        self.keep(amount, attributes)


class KeptMeter(NoOpMeter):
    def create_histogram(self, name: str, unit: str = "", description: str = "", **kw: object):
        return KeptHistogram(name, unit=unit, description=description)

    def create_counter(self, name: str, unit: str = "", description: str = "", **kw: object):
        return KeptCounter(name, unit=unit, description=description)


class KeptMeterProvider(metrics.NoOpMeterProvider):
    def get_meter(self, name: str, *args: object, **kwargs: object) -> metrics.Meter:
        return KeptMeter(name)


trace.set_tracer_provider(KeptTracerProvider())
metrics.set_meter_provider(KeptMeterProvider())
events.subscribe(OpenTelemetrySubscriber())  # the global providers, as an application does

registry = StorageRegistry()
registry.register_backend(ObstoreBackend("media", "memory://"))
saved = FileObject(backend="media", filename="o.txt", content=b"observed", registry=registry).save()
assert saved.get_content() == b"observed"

names = [name for name, _ in spans]
assert "storeroom.put" in names and "storeroom.get" in names, names
put = dict(spans)["storeroom.put"]
assert put["storeroom.backend"] == "media" and put["storeroom.path"] == saved.path, put
assert put["storeroom.size"] == 8, put
measured = {(name, attributes["storeroom.operation"]) for name, _, attributes in points}
assert ("storeroom.operation.duration", "put") in measured, points
assert ("storeroom.operation.bytes", "put") in measured, points
print("otel ok")
