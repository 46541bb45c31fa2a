"""The handler inside real TorchServe with the project's config.properties."""

import os
import re
import socket
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from transformers import pipeline

from stack.private import build_archive, private_torchserve
from stack.processes import group_members, wait_until
from stack.torchserve import ready_worker_count, start_torchserve, stop_torchserve
from tests.integration.conftest import run_make
from tools import management

pytestmark = pytest.mark.integration

TEXTS = ["it is worth it", "a waste of time and money", "good", "the worst film , really boring", "fun !"]


@pytest.fixture(scope="module")
def torchserve(running_torchserve, tiny_model_dir):
    return running_torchserve(tiny_model_dir)


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    return pipeline("text-classification", model=str(tiny_model_dir), device="cpu")


def predict(settings, body):
    return requests.post(settings.predictions_url, json=body, timeout=30)


def test_one_text_is_classified_like_the_pipeline(torchserve, reference):
    response = predict(torchserve, {"text": TEXTS[0]})
    assert response.status_code == 200
    expected = reference(TEXTS[0])[0]
    assert response.json()["label"] == expected["label"]
    assert response.json()["score"] == pytest.approx(expected["score"], abs=1e-5)


def test_many_texts_come_back_in_order(torchserve, reference):
    response = predict(torchserve, {"texts": TEXTS})
    assert response.status_code == 200
    labels = [result["label"] for result in response.json()["results"]]
    assert labels == [reference(text)[0]["label"] for text in TEXTS]


def test_concurrent_requests_each_get_their_own_answer(torchserve, reference):
    bodies = [{"text": text} if index % 2 else {"texts": [text, TEXTS[0]]} for index, text in enumerate(TEXTS * 4)]
    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        responses = list(pool.map(lambda body: predict(torchserve, body), bodies))
    for body, response in zip(bodies, responses, strict=True):
        assert response.status_code == 200
        texts = [body["text"]] if "text" in body else body["texts"]
        got = [response.json()] if "text" in body else response.json()["results"]
        assert [result["label"] for result in got] == [reference(text)[0]["label"] for text in texts]


def test_a_malformed_request_gets_a_json_400(torchserve):
    response = predict(torchserve, {"texts": ["fine", 7]})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_text_type"


def histogram_totals(settings, name):
    """Return (observations, sum) of a model histogram on TorchServe's metrics port."""
    text = requests.get(f"{settings.metrics_url}/metrics", timeout=10).text
    totals = []
    for suffix in ("_count", "_sum"):
        match = re.search(rf"^{name}{suffix}{{[^}}]*ModelName=\"sentiment\"[^}}]*}} (\S+)$", text, re.MULTILINE)
        totals.append(float(match.group(1)) if match else 0.0)
    return tuple(totals)


def test_texts_and_requests_per_batch_are_histograms_on_the_metrics_port(torchserve):
    before = {
        name: histogram_totals(torchserve, name) for name in ("sentiment_batch_texts", "sentiment_batch_requests")
    }
    # One at a time, so each request is a batch of its own: 1 text, then 5.
    assert predict(torchserve, {"text": TEXTS[0]}).status_code == 200
    assert predict(torchserve, {"texts": TEXTS}).status_code == 200
    expected = {"sentiment_batch_texts": (2, 6), "sentiment_batch_requests": (2, 2)}
    deadline = time.monotonic() + 15  # the frontend reads the worker's metric lines asynchronously
    while True:
        after = {name: histogram_totals(torchserve, name) for name in expected}
        grown = {name: tuple(a - b for a, b in zip(after[name], before[name], strict=True)) for name in expected}
        if grown == expected or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert grown == expected
    text = requests.get(f"{torchserve.metrics_url}/metrics", timeout=10).text
    assert "# TYPE sentiment_batch_texts histogram" in text
    assert re.search(r'^sentiment_batch_texts_bucket\{.*le="1\.0".*\} \S+$', text, re.MULTILINE)


def test_the_worker_warms_up_before_it_is_ready_and_logs_how_long(torchserve):
    log = (torchserve.log_dir / "model_log.log").read_text()
    warmups = re.findall(r"Warm-up: (\d+) of (\d+) pass shapes in ([\d.]+) s \(budget (\d+) s", log)
    assert warmups, "no warm-up line in model_log.log"
    done, planned, _, budget = (int(float(value)) for value in warmups[0])
    assert 1 <= done <= planned
    assert budget == 3


def processes_of(settings):
    """Return the PIDs of this TorchServe's processes (launcher, Java, workers): its TMPDIR is its own."""
    marker = f"TMPDIR={settings.run_dir / 'torchserve-tmp'}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and marker in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                pids.append(int(entry))
        except OSError:
            continue  # gone, or not ours
    return pids


def listening_tcp_ports(pids):
    """Return the TCP ports the processes `pids` listen on (IPv4 and IPv6)."""
    inodes = set()
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_the_management_api_listens_on_no_tcp_port_only_on_a_socket_in_a_private_folder(torchserve):
    pids = processes_of(torchserve)
    assert len(pids) >= 3  # launcher, Java frontend, one worker

    assert listening_tcp_ports(pids) == {
        torchserve.inference_port,
        torchserve.metrics_port,
        torchserve.grpc_inference_port,
        torchserve.grpc_management_port,  # gRPC cannot use a socket; on loopback (docs/security.md)
    }
    folder = torchserve.management_socket.parent
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and folder.stat().st_uid == os.getuid()
    assert stat.S_ISSOCK(torchserve.management_socket.stat().st_mode)
    answer = management.request(torchserve.management_url, "GET", f"/models/{torchserve.model_name}", timeout=10)
    assert answer.status_code == 200 and answer.json()[0]["modelName"] == torchserve.model_name


def test_a_describe_job_on_the_inference_api_is_answered_without_classifying(torchserve):
    response = requests.post(torchserve.predictions_url, json={}, headers={"X-Sentiment-Describe": "1"}, timeout=30)

    assert response.status_code == 200
    description = response.json()
    assert description["labels"] == ["NEGATIVE", "POSITIVE"]
    assert description["archive_version"] == response.headers["X-Model-Version"]
    assert {"max_text_tokens", "max_request_tokens", "runtime", "model_id"} <= set(description)
    # The frontend copies the worker's output into model_log.log on its own thread, after the answer.
    model_log = torchserve.log_dir / "model_log.log"
    wait_until(
        lambda: "texts=0 tokens=0 status=200 code=describe" in model_log.read_text(),
        timeout_s=10,
        what="the handler's log line for the describe job",
        log_path=model_log,
    )


def test_workers_scale_from_1_to_3_and_back_with_make_scale_workers(torchserve):
    env = {**os.environ, "TORCHSERVE_MANAGEMENT_URL": torchserve.management_url}
    for workers in (3, 1):
        result = run_make("scale-workers", f"N={workers}", env=env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.count("READY") == workers
        assert ready_worker_count(torchserve) == workers
    assert predict(torchserve, {"text": "good"}).status_code == 200


def test_stopping_leaves_no_launcher_java_or_worker_process(tmp_path, tiny_model_dir):
    settings = private_torchserve(tmp_path)
    build_archive(tiny_model_dir, settings.model_store)
    process = start_torchserve(settings)
    members = group_members(process.pid)
    assert len(members) >= 3  # launcher, Java frontend, one Python worker
    assert stop_torchserve(process.pid)
    process.wait(timeout=10)
    assert group_members(process.pid) == []
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", settings.inference_port), timeout=1):
        pass
