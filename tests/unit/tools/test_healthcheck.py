"""The TorchServe image's HEALTHCHECK: healthy only with a READY worker for the model."""

import requests

from tools import healthcheck
from tools.scale_workers import ScaleError


def describing(workers=None, error=None):
    def describe(url, model):
        describe.asked = (url, model)
        if error:
            raise error
        return {"workers": [{"status": status} for status in workers]}

    return describe


def test_a_ready_worker_is_healthy(monkeypatch, capsys):
    fake = describing(["READY", "UNLOADING"])
    monkeypatch.setattr(healthcheck, "describe_model", fake)
    assert healthcheck.main({"TORCHSERVE_MANAGEMENT_URL": "http://ts:8091/", "MODEL_NAME": "m"}) == 0
    assert fake.asked == ("http://ts:8091", "m")
    assert "1 READY of 2" in capsys.readouterr().out


def test_workers_still_loading_are_unhealthy(monkeypatch):
    monkeypatch.setattr(healthcheck, "describe_model", describing(["WORKER_STARTED"]))
    assert healthcheck.main({}) == 1


def test_an_unknown_model_or_a_dead_server_is_unhealthy(monkeypatch):
    for error in (ScaleError("GET /models/sentiment answered 404"), requests.ConnectionError("refused")):
        monkeypatch.setattr(healthcheck, "describe_model", describing(error=error))
        assert healthcheck.main({}) == 1
