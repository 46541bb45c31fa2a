"""W3C trace context through nginx -> facade -> TorchServe: the handler's log line carries the trace ID."""

import json
import secrets

import pytest
import requests

from tests.integration.test_observability import eventually

pytestmark = pytest.mark.integration


def test_the_callers_trace_id_reaches_the_facade_and_the_handler_logs(shared_stack):
    trace_id = secrets.token_hex(16)
    request_id = "trace-" + secrets.token_hex(8)
    headers = {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01", "X-Request-ID": request_id}
    answer = requests.post(shared_stack.url, json={"text": "It is worth it"}, headers=headers, timeout=30)
    assert answer.status_code == 200

    def handler_line():
        lines = (shared_stack.log_dir / "model_log.log").read_text().splitlines()
        return next((line for line in lines if f"request_id={request_id} " in line), None)

    def facade_line():
        for port in shared_stack.facade_ports:
            for line in (shared_stack.log_dir / f"facade-{port}.log").read_text().splitlines():
                if request_id in line and line.lstrip().startswith("{"):
                    return json.loads(line)
        return None

    logged = eventually(handler_line)
    assert logged is not None and logged.endswith(f"trace_id={trace_id}")
    line = eventually(facade_line)
    assert line is not None and line["trace_id"] == trace_id
