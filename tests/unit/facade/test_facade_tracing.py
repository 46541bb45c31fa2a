"""Tracing: W3C traceparent accepted and passed on, spans recorded to an in-memory exporter."""

import json
import logging

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from facade import create_app
from facade.tracing import trace_headers

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture
def sent_headers(predictor):
    """The trace headers the predictor would send to TorchServe, per call."""
    sent = []
    plain = predictor.classify

    def classify(texts, request_id, options=None):
        sent.append(trace_headers())
        return plain(texts, request_id, options)

    predictor.classify = classify
    return sent


@pytest.fixture
def exporter():
    return InMemorySpanExporter()


@pytest.fixture
def traced(settings, predictor, exporter):
    return create_app(settings, predictor, span_exporter=exporter).test_client()


def test_spans_join_the_clients_trace_and_torchserve_gets_the_calls_span(traced, exporter, sent_headers):
    response = traced.post("/", json={"text": "good"}, headers={"traceparent": TRACEPARENT})

    assert response.status_code == 200
    spans = {span.name: span for span in exporter.get_finished_spans()}
    server, call = spans["POST /"], spans["torchserve predictions"]
    assert server.kind == SpanKind.SERVER and call.kind == SpanKind.CLIENT
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert format(server.parent.span_id, "016x") == PARENT_ID
    assert call.parent.span_id == server.context.span_id
    assert server.attributes["http.response.status_code"] == 200
    assert sent_headers[0]["traceparent"] == f"00-{TRACE_ID}-{format(call.context.span_id, '016x')}-01"


def test_a_request_without_traceparent_starts_a_trace(traced, exporter, sent_headers):
    traced.post("/", json={"text": "good"})
    (server,) = [span for span in exporter.get_finished_spans() if span.kind == SpanKind.SERVER]
    assert server.parent is None
    assert sent_headers[0]["traceparent"].split("-")[1] == format(server.context.trace_id, "032x")


def test_with_tracing_off_the_clients_traceparent_still_reaches_torchserve(client, sent_headers):
    client.post("/", json={"text": "good"}, headers={"traceparent": TRACEPARENT})
    client.post("/", json={"text": "good"})
    assert sent_headers == [{"traceparent": TRACEPARENT}, {}]


def test_a_malformed_traceparent_is_ignored(client, sent_headers):
    client.post("/", json={"text": "good"}, headers={"traceparent": "00-not-a-trace-01"})
    assert sent_headers == [{}]


def test_the_request_log_line_carries_the_trace_id(client, caplog):
    with caplog.at_level(logging.INFO, logger="facade.requests"):
        client.post("/", json={"text": "good"}, headers={"traceparent": TRACEPARENT})
    line = json.loads(caplog.records[-1].getMessage())
    assert line["trace_id"] == TRACE_ID


def test_an_otlp_endpoint_must_be_an_http_url(settings):
    from dataclasses import replace

    from facade.settings import SettingsError

    with pytest.raises(SettingsError, match="FACADE_OTLP_ENDPOINT"):
        replace(settings, otlp_endpoint="collector:4318")


def test_with_an_otlp_endpoint_spans_are_posted_there_and_without_one_nothing_is_recorded(settings, predictor):
    import threading
    from dataclasses import replace
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from facade.tracing import PROVIDER_KEY, TRACER_KEY

    received = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(
                (self.path, self.headers["Content-Type"], self.rfile.read(int(self.headers["Content-Length"])))
            )
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_port}/v1/traces"
        app = create_app(replace(settings, otlp_endpoint=endpoint), predictor)
        app.test_client().post("/", json={"text": "good"}, headers={"traceparent": TRACEPARENT})
        assert app.extensions[PROVIDER_KEY].force_flush(5000)
        app.extensions[PROVIDER_KEY].shutdown()
    finally:
        server.shutdown()
        server.server_close()
    assert received and received[0][0] == "/v1/traces"
    assert received[0][1] == "application/x-protobuf"
    assert bytes.fromhex(TRACE_ID) in b"".join(body for _, _, body in received)
    assert TRACER_KEY not in create_app(settings, predictor).extensions
