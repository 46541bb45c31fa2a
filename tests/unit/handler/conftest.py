"""A hand-written stand-in for TorchServe's Context, and a handler loaded on the tiny model."""

import shutil
import warnings

import pytest
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

from tests.conftest import PROJECT_DIR

METRICS_CONFIG = PROJECT_DIR / "torchserve-metrics.yaml"


def worker_metrics():
    """Return TorchServe's own worker-side metrics cache, loaded from the project's metrics yaml."""
    with warnings.catch_warnings():
        # TorchServe 0.12 opens the yaml without closing it (its bug); the file is freed right here.
        warnings.simplefilter("ignore", ResourceWarning)
        metrics = MetricsCacheYamlImpl(config_file_path=str(METRICS_CONFIG))
    metrics.initialize_cache()
    metrics.model_name = "sentiment"
    return metrics


class FakeContext:
    """What TorchServe hands a handler: properties, the yaml config, per-request response control."""

    def __init__(self, model_dir, yaml_config=None, headers=None):
        self.system_properties = {"model_dir": str(model_dir), "gpu_id": None, "batch_size": 16}
        self.model_yaml_config = yaml_config if yaml_config is not None else {"minWorkers": 1}
        self.manifest = {
            "model": {"modelName": "sentiment", "handler": "sentiment_handler.py", "modelVersion": "0123456789ab"}
        }
        self.metrics = worker_metrics()
        self.statuses = {}
        self.content_types = {}
        self.response_headers = {}
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

    def set_response_header(self, idx, key, value):
        """Record a header TorchServe would send with request `idx`'s answer."""
        self.response_headers.setdefault(idx, {})[key] = value


@pytest.fixture(scope="session")
def tiny_archive_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model as an onnx archive unpacks: its files plus model.onnx from the project's export."""
    from tools.onnx_export import export_onnx

    target = tmp_path_factory.mktemp("tiny-archive")
    for path in tiny_model_dir.iterdir():
        shutil.copy(path, target / path.name)
    export_onnx(tiny_model_dir, target / "model.onnx")
    return target


@pytest.fixture(scope="session", params=["onnx", "torch"])
def loaded_handler(request, tiny_archive_dir):
    """A SentimentHandler initialized on the tiny model, once per runtime, shared across tests (read-only)."""
    from sentiment_handler import SentimentHandler

    handler = SentimentHandler()
    handler.initialize(FakeContext(tiny_archive_dir, {"minWorkers": 1, "handler": {"runtime": request.param}}))
    return handler


@pytest.fixture
def handle(loaded_handler, tiny_model_dir):
    """Run one TorchServe batch through the handler; return (responses, context)."""

    def run(rows, headers=None):
        context = FakeContext(tiny_model_dir, headers=headers)
        return loaded_handler.handle(rows, context), context

    return run
