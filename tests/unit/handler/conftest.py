"""A hand-written stand-in for TorchServe's Context, and a handler loaded on the tiny model."""

import pytest


class FakeMetrics:
    """Accepts the metrics BaseHandler.handle records."""

    def add_time(self, *args, **kwargs):
        """Ignore the HandlerTime metric."""


class FakeContext:
    """What TorchServe hands a handler: properties, the yaml config, per-request response control."""

    def __init__(self, model_dir, yaml_config=None, headers=None):
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": None, "batch_size": 16}
        self.model_yaml_config = yaml_config if yaml_config is not None else {"minWorkers": 1}
        self.manifest = {"model": {"modelName": "sentiment", "handler": "sentiment_handler.py"}}
        self.metrics = FakeMetrics()
        self.statuses = {}
        self.content_types = {}
        self.headers = headers or {}

    def get_request_header(self, idx, key):
        """Return header `key` of request `idx` (none carries TorchServe's describe/explain headers)."""
        return self.headers.get(idx, {}).get(key)

    def set_response_status(self, code=200, phrase="", idx=0):
        """Record the status TorchServe would send for request `idx`."""
        self.statuses[idx] = (code, phrase)

    def set_response_content_type(self, idx, value):
        """Record the content type TorchServe would send for request `idx`."""
        self.content_types[idx] = value


@pytest.fixture(scope="session")
def loaded_handler(tiny_model_dir):
    """A SentimentHandler initialized on the tiny model, shared across tests (read-only)."""
    from sentiment_handler import SentimentHandler

    handler = SentimentHandler()
    handler.initialize(FakeContext(tiny_model_dir))
    return handler


@pytest.fixture
def handle(loaded_handler, tiny_model_dir):
    """Run one TorchServe batch through the handler; return (responses, context)."""

    def run(rows, headers=None):
        context = FakeContext(tiny_model_dir, headers=headers)
        return loaded_handler.handle(rows, context), context

    return run
