"""Faults on the native stack, seen from a client of nginx: killed and stopped servers, a slow
model, a full TorchServe queue, and graceful stops under load.

Every test asserts what clients get while the fault happens: a JSON answer (200, or an error
with the documented code), never a hang or an HTML page, and the service serving again by
itself afterwards.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import pytest
import requests

from stack.launcher import down, running_groups, start_facade, up
from stack.private import private_stack
from stack.processes import group_members, http_status, stop_group, wait_until
from stack.torchserve import ready_worker_count, start_torchserve, stop_torchserve
from tests.integration.conftest import record_restarted, started_stack, stop_stack
from tools.scale_workers import describe_model

pytestmark = pytest.mark.integration

# A test-only TorchServe handler that answers like the sentiment handler (the same JSON shape),
# but instantly, sleeping only when a text asks for it ("sleep:<seconds>") and failing the
# batch on "crash", so timeouts and queueing can be produced on demand.
SLOW_HANDLER = """
import time


def handle(data, context):
    if data is None:  # TorchServe's initialize call
        return None
    delay, answers = 0.0, []
    for index, row in enumerate(data):
        # The facade counts a replica ready once a worker answered its describe job.
        if context.get_request_header(index, "X-Sentiment-Describe"):
            answers.append({"labels": ["NEGATIVE", "POSITIVE"], "max_text_tokens": 512, "max_request_tokens": 2048})
            continue
        texts = (row.get("body") or {}).get("texts") or []
        for text in texts:
            if text.startswith("sleep:"):
                delay = max(delay, float(text.split(":", 1)[1]))
            if text == "crash":
                raise RuntimeError("the test handler crashed on purpose")
        answers.append({"results": [{"label": "POSITIVE", "score": 0.5} for _ in texts]})
    time.sleep(delay)
    return answers
"""
SLOW_MODEL_CONFIG = """
minWorkers: 1
maxWorkers: 1
batchSize: 8
maxBatchDelay: 20
responseTimeout: 60
"""
# The slow stack's facades give TorchServe this long before answering 504.
SLOW_READ_TIMEOUT_S = 2


def post(url, text, timeout=30):
    return requests.post(url, json={"text": text}, timeout=timeout)


def assert_json_error(response, status, code):
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["error"]["code"] == code


@dataclass
class Answer:
    """One request of a load: when it was sent and ended, and what came back."""

    started: float
    ended: float
    status: int | None = None  # None: no HTTP answer (the exception says why)
    body: object = None
    headers: dict = field(default_factory=dict)
    exception: str = ""

    @property
    def is_json_error(self):
        error = self.body.get("error") if isinstance(self.body, dict) else None
        return self.status is not None and self.status >= 400 and isinstance(error, dict) and "code" in error


class Load:
    """Threads that each keep one request in flight until stopped (bounded in time and count)."""

    def __init__(self, url, threads=8, text="It is worth it", max_s=60.0, max_requests=20_000, timeout_s=20.0):
        self.url, self.text, self.timeout_s = url, text, timeout_s
        self.deadline = time.monotonic() + max_s
        self.max_requests = max_requests
        self.answers = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout_s + 5)
        return False

    def _run(self):
        session = requests.Session()
        while not self._stop.is_set() and time.monotonic() < self.deadline and len(self.answers) < self.max_requests:
            started = time.monotonic()
            try:
                response = session.post(self.url, json={"text": self.text}, timeout=self.timeout_s)
                try:
                    body = response.json()
                except ValueError:
                    body = response.text
                answer = Answer(started, time.monotonic(), response.status_code, body, dict(response.headers))
            except requests.RequestException as exc:
                answer = Answer(started, time.monotonic(), exception=repr(exc))
                time.sleep(0.05)  # nothing listening: do not spin
            with self._lock:
                self.answers.append(answer)

    def successes(self, since=0.0, until=float("inf")):
        """Return the 200 answers that ended within [since, until)."""
        return [a for a in list(self.answers) if a.status == 200 and since <= a.ended < until]

    def wait_for_successes(self, count, since=0.0, timeout_s=60.0):
        wait_until(
            lambda: len(self.successes(since)) >= count,
            timeout_s=timeout_s,
            what=f"{count} successful requests under load",
            log_path="the test's load",
        )


def facade_in_progress(port):
    """Return facade_requests_in_progress of the facade on `port` (all its workers)."""
    metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    values = [line.split()[-1] for line in metrics.splitlines() if line.startswith("facade_requests_in_progress")]
    return sum(float(value) for value in values)


def worker_pids(settings):
    """Return {pid: status} of the model's TorchServe workers."""
    workers = describe_model(settings.torchserve.management_url, settings.torchserve.model_name, 5)["workers"]
    return {worker["pid"]: worker["status"] for worker in workers}


def replaced(settings, pid):
    """Return True when a worker other than `pid` is READY and `pid` is gone."""
    pids = worker_pids(settings)
    return pid not in pids and "READY" in pids.values()


def build_slow_archive(work_dir, model_store):
    """Package SLOW_HANDLER as the model `sentiment` into model_store."""
    work_dir.mkdir(parents=True, exist_ok=True)
    model_store.mkdir(parents=True, exist_ok=True)
    (work_dir / "slow_handler.py").write_text(SLOW_HANDLER)
    (work_dir / "model-config.yaml").write_text(SLOW_MODEL_CONFIG)
    command = [
        sys.executable, "-m", "model_archiver.model_packaging",
        "--model-name", "sentiment", "--version", "1.0",
        "--handler", str(work_dir / "slow_handler.py"),
        "--config-file", str(work_dir / "model-config.yaml"),
        "--export-path", str(model_store), "--archive-format", "zip-store", "--force",
    ]  # fmt: skip
    # The archiver stages in $TMPDIR/<model-name> and deletes it first: keep builds apart.
    subprocess.run(command, env={**os.environ, "TMPDIR": str(work_dir)}, check=True, capture_output=True)


# Servers (re)started by the tests of this module, waited for when their stack stops.
STARTED = []


@pytest.fixture(scope="module")
def stack(tmp_path_factory, serving_model_dir):
    """A whole stack serving the real model, for the tests that kill or stop its servers."""
    settings = started_stack(tmp_path_factory.mktemp("faults"), serving_model_dir, STARTED)
    yield settings
    stop_stack(settings, STARTED)


@pytest.fixture(scope="module")
def slow_archive(tmp_path_factory):
    """The model store holding the slow test handler's archive."""
    work_dir = tmp_path_factory.mktemp("slow-model")
    build_slow_archive(work_dir / "build", work_dir / "model-store")
    return work_dir / "model-store"


def start_slow_stack(tmp_path, slow_archive, **environ):
    """Start a stack on the slow handler, with extra environment for its servers."""
    settings = private_stack(tmp_path)
    settings.torchserve.model_store.mkdir(parents=True)
    (settings.torchserve.model_store / "sentiment.mar").symlink_to(slow_archive / "sentiment.mar")
    with pytest.MonkeyPatch.context() as patch:
        # Read when the servers start: facade_env and torchserve_env start from os.environ.
        for name, value in environ.items():
            patch.setenv(name, value)
        processes = list(up(settings).values())
    return settings, processes


@pytest.fixture(scope="module")
def slow_stack(tmp_path_factory, slow_archive):
    """A stack on the slow handler: facades time out after 2 s, TorchServe queues 2 jobs at most."""
    settings, processes = start_slow_stack(
        tmp_path_factory.mktemp("slow-stack"),
        slow_archive,
        FACADE_READ_TIMEOUT_S=str(SLOW_READ_TIMEOUT_S),
        TS_JOB_QUEUE_SIZE="2",
    )
    yield settings
    stop_stack(settings, processes)


def test_a_facade_killed_under_load_fails_at_most_its_requests_in_flight_and_none_after_1_s(stack):
    victim = stack.facade_ports[0]
    pgid = running_groups(stack)[f"facade-{victim}"]
    threads = 8
    with Load(stack.url, threads=threads) as load:
        load.wait_for_successes(20)
        killed_at = time.monotonic()
        os.killpg(pgid, signal.SIGKILL)
        assert stop_group(pgid, timeout_s=5)
        load.wait_for_successes(20, since=killed_at + 1)
    failures = [answer for answer in load.answers if answer.status != 200]
    print(f"facade SIGKILL: {len(load.answers)} requests, {len(failures)} failed")

    assert all(answer.is_json_error for answer in failures), failures
    assert len([answer for answer in failures if answer.started <= killed_at]) <= threads
    assert [answer for answer in failures if answer.started > killed_at + 1] == []
    assert max(answer.ended - answer.started for answer in load.answers) < 10
    survivors = {answer.body["container_id"] for answer in load.successes(since=killed_at + 1)}
    assert len(survivors) == 1
    assert not survivors.pop().endswith(f"-{victim}")

    record_restarted(stack, f"facade-{victim}", start_facade(stack, victim), STARTED)
    wait_until(
        lambda: http_status(f"http://127.0.0.1:{victim}/healthz") == 200,
        timeout_s=30,
        what="the restarted facade",
        log_path=stack.log_dir,
    )


def test_a_killed_torchserve_worker_is_replaced_and_clients_get_200_or_json_503_with_retry_after(stack):
    (victim,) = worker_pids(stack)
    window_s = 3.0
    with Load(stack.url, threads=8, max_s=120) as load:
        load.wait_for_successes(10)
        before_from = time.monotonic()
        time.sleep(window_s)  # a throughput window before the kill
        killed_at = time.monotonic()
        before = len(load.successes(before_from, killed_at)) / window_s
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: replaced(stack, victim),
            timeout_s=90,
            what="a new READY TorchServe worker",
            log_path=stack.log_dir,
        )
        replaced_at = time.monotonic()
        load.wait_for_successes(5, since=replaced_at)  # the new worker's first batches
        after_from = time.monotonic()
        time.sleep(window_s)
        after = len(load.successes(after_from, time.monotonic())) / window_s
    answers = load.answers
    unexpected = [a for a in answers if a.status != 200 and not (a.status == 503 and a.is_json_error)]
    statuses = {status: sum(a.status == status for a in answers) for status in {a.status for a in answers}}
    print(
        f"worker SIGKILL: {statuses}, replaced after {replaced_at - killed_at:.1f} s, "
        f"throughput {before:.1f}/s before, {after:.1f}/s after"
    )

    assert unexpected == []
    for answer in answers:
        if answer.status == 503:
            assert answer.body["error"]["code"] == "backend_unavailable"
            assert answer.headers["Retry-After"]
    assert [a for a in answers if a.started > killed_at and a.status == 200], "nothing succeeded after the kill"
    assert after >= 0.5 * before, f"throughput {before:.1f}/s before the kill, {after:.1f}/s after"


def test_torchserve_stopped_gives_503_within_the_timeouts_and_recovers_without_a_facade_restart(stack):
    groups = running_groups(stack)
    facades = {name: group_members(pgid) for name, pgid in groups.items() if name.startswith("facade-")}
    assert stop_torchserve(groups["torchserve"])

    started = time.monotonic()
    answer = post(stack.url, "fine")
    post_s = time.monotonic() - started
    started = time.monotonic()
    readiness = requests.get(stack.url + "readyz", timeout=10)
    ready_s = time.monotonic() - started

    print(f"TorchServe stopped: POST 503 in {post_s:.2f} s, /readyz 503 in {ready_s:.2f} s")
    assert_json_error(answer, 503, "backend_unavailable")
    assert answer.headers["Retry-After"]
    assert post_s < 2 * 1.0 + 1  # two connects of FACADE_CONNECT_TIMEOUT_S (1 s), refused at once here
    assert_json_error(readiness, 503, "backend_unavailable")
    assert ready_s < 2.0 + 1  # FACADE_READY_TIMEOUT_S

    record_restarted(stack, "torchserve", start_torchserve(stack.torchserve), STARTED)
    wait_until(
        lambda: http_status(stack.url + "readyz") == 200,
        timeout_s=60,
        what="readiness after TorchServe restarted",
        log_path=stack.log_dir,
    )
    assert post(stack.url, "fine").status_code == 200
    assert {name: group_members(running_groups(stack)[name]) for name in facades} == facades


def test_a_slow_model_gets_the_facades_json_504_at_its_timeout_and_nothing_stays_stuck(slow_stack):
    started = time.monotonic()
    answer = post(slow_stack.url, "sleep:4")
    elapsed = time.monotonic() - started
    print(f"slow model: 504 after {elapsed:.2f} s (facade timeout {SLOW_READ_TIMEOUT_S} s)")

    assert_json_error(answer, 504, "backend_timeout")
    # The facade's answer (a facade's container ID), at its timeout, well before nginx's 30 s.
    assert answer.json()["container_id"].endswith(tuple(f"-{port}" for port in slow_stack.facade_ports))
    assert SLOW_READ_TIMEOUT_S - 0.1 <= elapsed < SLOW_READ_TIMEOUT_S + 2

    # TorchServe's worker finishes the sleep and serves again; no facade thread is left waiting.
    wait_until(
        lambda: post(slow_stack.url, "fine").status_code == 200,
        timeout_s=15,
        what="a normal answer after the slow one",
        log_path=slow_stack.log_dir,
    )
    assert [facade_in_progress(port) for port in slow_stack.facade_ports] == [0, 0]
    assert ready_worker_count(slow_stack.torchserve) == 1


def test_a_full_torchserve_queue_gets_json_503_with_retry_after_quickly_not_a_hang_or_500(slow_stack):
    answers = []

    def send():
        started = time.monotonic()
        response = post(slow_stack.url, "sleep:3")
        answers.append((response, time.monotonic() - started))

    flood = [threading.Thread(target=send) for _ in range(16)]
    for thread in flood:
        thread.start()
    for thread in flood:
        thread.join(timeout=30)
    shed = [(response, seconds) for response, seconds in answers if response.status_code == 503]
    others = {response.status_code for response, _ in answers} - {503}
    print(
        f"queue full: {len(shed)} of 16 shed with 503 in at most {max((s for _, s in shed), default=0):.2f} s, "
        f"the others {sorted(response.status_code for response, _ in answers if response.status_code != 503)}"
    )

    assert len(answers) == 16
    assert shed, "no request was shed with 503"
    for response, seconds in shed:
        assert_json_error(response, 503, "backend_unavailable")
        assert response.headers["Retry-After"] == "1"
        assert seconds < 1.5
    # The admitted ones wait in TorchServe's queue and time out at the facade; none is a 5xx other than these.
    assert others <= {200, 504}
    wait_until(
        lambda: post(slow_stack.url, "fine").status_code == 200,
        timeout_s=30,
        what="a normal answer after the flood",
        log_path=slow_stack.log_dir,
    )


def test_a_request_that_fails_in_the_model_gets_502_once_and_leaves_the_replicas_in_service(slow_stack):
    failed = post(slow_stack.url, "crash")
    right_after = [post(slow_stack.url, "fine") for _ in range(4)]

    assert_json_error(failed, 502, "backend_error")
    # nginx did not retry it on the other replica (it would fail there too) nor mark them down.
    access_log = (slow_stack.log_dir / "nginx-access.log").read_text().splitlines()
    line = next(line for line in access_log if f"request_id={failed.headers['X-Request-ID']}" in line)
    assert "upstream_status=502 " in line
    assert [response.status_code for response in right_after] == [200] * 4


def test_a_facade_stopped_with_sigterm_under_load_finishes_its_requests_in_flight(tmp_path, slow_archive):
    # Its own stack, with TorchServe's default queue: the slow stack's 2-job queue would shed this load.
    settings, processes = start_slow_stack(tmp_path, slow_archive)
    victim = settings.facade_ports[0]
    pgid = running_groups(settings)[f"facade-{victim}"]
    slow = []

    def send_slow():
        slow.append(post(settings.url, "sleep:1.5"))

    senders = [threading.Thread(target=send_slow) for _ in range(4)]
    try:
        with Load(settings.url, threads=2) as load:
            for thread in senders:
                thread.start()
            wait_until(
                lambda: facade_in_progress(victim) >= 1,
                timeout_s=10,
                what="a slow request in flight on the facade to stop",
                log_path=settings.log_dir,
            )
            assert stop_group(pgid, timeout_s=25)  # SIGTERM: Gunicorn's graceful stop
            stopped_at = time.monotonic()
            load.wait_for_successes(5, since=stopped_at)
        for thread in senders:
            thread.join(timeout=30)
    finally:
        stop_stack(settings, processes)

    assert [response.status_code for response in slow] == [200] * 4
    assert {answer.status for answer in load.answers} == {200}
    after = [answer for answer in load.successes() if answer.started > stopped_at]
    assert after
    assert all(not answer.body["container_id"].endswith(f"-{victim}") for answer in after)


def test_stopping_the_whole_stack_under_load_finishes_requests_in_flight_then_leaves_no_process(tmp_path, slow_archive):
    settings, processes = start_slow_stack(tmp_path, slow_archive)
    groups = running_groups(settings)
    slow = []

    def send_slow():
        try:
            slow.append(post(settings.url, "sleep:2").status_code)
        except requests.RequestException as exc:
            slow.append(repr(exc))

    senders = [threading.Thread(target=send_slow) for _ in range(4)]
    try:
        with Load(settings.url, threads=2, timeout_s=40) as load:
            for thread in senders:
                thread.start()
            wait_until(
                lambda: sum(facade_in_progress(port) for port in settings.facade_ports) >= 4,
                timeout_s=10,
                what="4 slow requests in flight",
                log_path=settings.log_dir,
            )
            stopping_at = time.monotonic()
            down(settings, quiet=True)  # nginx (SIGQUIT), facades (SIGTERM), TorchServe
            stopped_s = time.monotonic() - stopping_at
            print(f"graceful stop under load: everything stopped in {stopped_s:.1f} s")
        for thread in senders:
            thread.join(timeout=30)
    finally:
        down(settings, quiet=True)  # safe to run twice

    assert slow == [200] * 4
    # Under load: every answer anyone got was a 200; the rest could not connect once nginx had stopped.
    assert {answer.status for answer in load.answers} <= {200, None}
    assert all(answer.ended >= stopping_at for answer in load.answers if answer.status is None)
    assert stopped_s < 30
    for process in processes:
        process.wait(timeout=10)
    assert all(group_members(pgid) == [] for pgid in groups.values())
    assert http_status(settings.url + "healthz") is None
