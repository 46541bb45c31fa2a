"""Tracing, optional: OpenTelemetry spans for each request and each TorchServe call, W3C trace context.

A client's `traceparent` (W3C Trace Context) is always accepted and passed on to TorchServe,
whose handler logs its trace ID next to the request ID: a trace started upstream can be followed
into the model's log even with tracing off. With FACADE_OTLP_ENDPOINT set (an OTLP/HTTP traces
URL, e.g. http://collector:4318/v1/traces), the facade also records spans, a server span per
request (a child of the client's span when it sent one) and a client span per TorchServe call,
and exports them in batches; TorchServe then gets the TorchServe call's span as parent. Nothing
is recorded or exported without an endpoint (or an exporter handed to create_app in tests).
"""

from contextlib import contextmanager

from flask import Flask, current_app, g, request
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

PROPAGATOR = TraceContextTextMapPropagator()
TRACER_KEY = "facade.tracer"
PROVIDER_KEY = "facade.tracer_provider"
SERVICE_NAME = "sentiment-facade"


def install(app: Flask, endpoint: str, container_id: str, exporter=None) -> None:
    """Accept and pass on trace context on every request; record spans when an endpoint or exporter is given."""
    if endpoint or exporter is not None:
        provider = _provider(endpoint, container_id, exporter)
        # The provider flushes its batch when the process exits; tests flush it themselves.
        app.extensions[PROVIDER_KEY] = provider
        app.extensions[TRACER_KEY] = provider.get_tracer(__name__)
    app.before_request(_start)
    app.after_request(_record_status)
    app.teardown_request(_end)


def trace_headers() -> dict:
    """Return the `traceparent` (and `tracestate`) to send with a call made now, or {} outside a trace."""
    carrier: dict = {}
    PROPAGATOR.inject(carrier)
    return carrier


@contextmanager
def client_span(name: str):
    """Run the block in a client span of the current request's trace (nothing when not recording)."""
    tracer = current_app.extensions.get(TRACER_KEY)
    if tracer is None:
        yield
        return
    with tracer.start_as_current_span(name, kind=trace.SpanKind.CLIENT):
        yield


def current_trace_id() -> str | None:
    """Return the current trace's ID (32 hex digits), or None outside a valid trace."""
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


def _provider(endpoint: str, container_id: str, exporter):
    # Imported here: the SDK and the exporter load only when tracing is on.
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(
        resource=Resource.create({"service.name": SERVICE_NAME, "service.instance.id": container_id})
    )
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def _start() -> None:
    parent = PROPAGATOR.extract(request.headers)
    ctx = parent
    tracer = current_app.extensions.get(TRACER_KEY)
    if tracer is not None:
        # The route template, never the raw path (bounded span names, as the metrics' route label).
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        g.trace_span = tracer.start_span(
            f"{request.method} {route}",
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes={"http.request.method": request.method, "http.route": route},
        )
        ctx = trace.set_span_in_context(g.trace_span, parent)
    g.trace_token = otel_context.attach(ctx)
    trace_id = current_trace_id()
    if trace_id:
        g.trace_id = trace_id


def _record_status(response):
    span = g.get("trace_span")
    if span is not None:
        span.set_attribute("http.response.status_code", response.status_code)
        if response.status_code >= 500:
            span.set_status(trace.Status(trace.StatusCode.ERROR))
    return response


def _end(_exc) -> None:
    span = g.pop("trace_span", None)
    if span is not None:
        span.end()
    token = g.pop("trace_token", None)
    if token is not None:
        otel_context.detach(token)
