"""Fixtures for the facade: small limits, a fake predictor, the app and its test client."""

import pytest

from facade import create_app
from facade.info import note_served_version
from facade.settings import Settings


class FakePredictor:
    """Stands in for TorchServeClient: answers from a script and records what it was asked."""

    def __init__(self):
        self.ready = True
        self.error = None
        self.truncated_indexes = set()
        self.calls = []
        self.options = []
        self.description = {"archive_version": "0123456789ab", "model_id": "tiny", "labels": ["NEGATIVE", "POSITIVE"]}

    def classify(self, texts, request_id, options=None):
        """Return POSITIVE for texts with "good" in them, else NEGATIVE; or raise the scripted error."""
        self.calls.append((list(texts), request_id))
        self.options.append(options)
        if self.error is not None:
            raise self.error
        results = []
        for index, text in enumerate(texts):
            result = {"label": "POSITIVE", "score": 0.9998} if "good" in text else {"label": "NEGATIVE", "score": 0.75}
            if index in self.truncated_indexes:
                result["truncated"] = True
            results.append(result)
        # What TorchServeClient notes from the handler's X-Model-Version header.
        note_served_version(self.description["archive_version"])
        return results

    def describe(self):
        """Return the scripted description of the model, or raise the scripted error."""
        if self.error is not None:
            raise self.error
        return self.description

    def is_ready(self):
        """Return the scripted readiness."""
        return self.ready


@pytest.fixture
def settings():
    return Settings(max_texts=3, max_text_chars=20, max_body_bytes=2048, retry_after_s=7, container_id="test-box")


@pytest.fixture
def predictor():
    return FakePredictor()


@pytest.fixture
def app(settings, predictor):
    return create_app(settings, predictor)


@pytest.fixture
def client(app):
    return app.test_client()
