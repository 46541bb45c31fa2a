"""The key faults, in Docker: a facade replica killed, the TorchServe worker killed, TorchServe stopped.

Each runs a small steady load through nginx (a few client threads, one short text per request)
around the fault, against the shared stack of conftest.py, and leaves the stack as it found it
(every container running and healthy) for the tests after it.
"""

import json
import threading
import time
from dataclasses import dataclass

import pytest
import requests

from tests.docker.conftest import run

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CLIENTS = 4
CLIENT_TIMEOUT_S = 20  # a request still unanswered after this is a hang
TEXT = "It is worth it"


@dataclass(frozen=True)
class Outcome:
    """One request of the load: when it started and ended (monotonic seconds) and what came back."""

    start: float
    end: float
    status: int | None  # None: no HTTP answer at all (connection error or timeout)
    json_body: bool
    retry_after: str | None
    detail: str

    def __str__(self):
        return f"{self.status} after {self.end - self.start:.2f} s: {self.detail[:160]}"


def classify(session, url):
    """POST one text through nginx; return its Outcome, never raise."""
    start = time.monotonic()
    try:
        response = session.post(f"{url}/", json={"text": TEXT}, timeout=CLIENT_TIMEOUT_S)
    except requests.RequestException as exc:
        return Outcome(start, time.monotonic(), None, False, None, repr(exc))
    try:
        response.json()
        json_body = True
    except ValueError:
        json_body = False
    retry_after = response.headers.get("Retry-After")
    return Outcome(start, time.monotonic(), response.status_code, json_body, retry_after, response.text)


def under_load(url, fault, *, settled, before_s=0.5, min_after_s=1.5, max_after_s=30.0):
    """Run CLIENTS looping clients, apply `fault()` after `before_s`, keep going until `settled`.

    `settled(outcomes, fault_done)` is asked every 0.1 s once `min_after_s` have passed since the
    fault; the load stops when it says yes or after `max_after_s`. Returns (outcomes, the moment
    `fault()` returned).
    """
    outcomes, lock, stop = [], threading.Lock(), threading.Event()

    def client():
        with requests.Session() as session:
            while not stop.is_set():
                outcome = classify(session, url)
                with lock:
                    outcomes.append(outcome)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(before_s)
        fault()
        fault_done = time.monotonic()
        while time.monotonic() - fault_done < max_after_s:
            time.sleep(0.1)
            with lock:
                snapshot = list(outcomes)
            if time.monotonic() - fault_done >= min_after_s and settled(snapshot, fault_done):
                break
    finally:
        stop.set()
        for thread in threads:
            thread.join(CLIENT_TIMEOUT_S + 5)
    return outcomes, fault_done


def first_success_after(outcomes, moment):
    """Return the first 200 among the requests that started after `moment`, or None."""
    return min((o for o in outcomes if o.status == 200 and o.start >= moment), key=lambda o: o.end, default=None)


def describe_workers(stack):
    """Return [(pid, status)] of the model's TorchServe workers, from the management API."""
    status, body = stack.management("GET", "/models/sentiment")
    assert status == 200, body
    return [(worker["pid"], worker["status"]) for worker in json.loads(body)[0]["workers"]]


def wait_until_serving(container, timeout_s=30):
    """Wait until a (re)started facade answers its own /healthz (Docker's health check lags by 5 s)."""
    probe = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/healthz', timeout=1)"
    deadline = time.monotonic() + timeout_s
    while run(["docker", "exec", container, "python", "-c", probe], check=False).returncode != 0:
        assert time.monotonic() < deadline, f"{container[:12]} does not serve {timeout_s} s after its start"
        time.sleep(0.25)


def test_killing_a_facade_replica_under_load_fails_at_most_the_requests_in_flight(stack, capsys):
    replicas = stack.container_ids("app")
    assert len(replicas) >= 2, "needs two replicas: one to kill, one to take over"
    victim = replicas[0]
    try:
        outcomes, killed = under_load(
            stack.url,
            lambda: run(["docker", "kill", "--signal", "KILL", victim]),
            settled=lambda outcomes, done: first_success_after(outcomes, done + 1.0) is not None,
        )
        assert not stack.inspect(victim)["State"]["Running"]
        no_answer = [str(o) for o in outcomes if o.status is None]
        assert not no_answer, f"requests without an answer (hang or dropped connection): {no_answer}"
        not_json = [str(o) for o in outcomes if not o.json_body]
        assert not not_json, f"answers that are not JSON: {not_json}"
        late = [str(o) for o in outcomes if o.status != 200 and o.start > killed + 1.0]
        assert not late, f"requests that started more than 1 s after the kill failed: {late}"
        assert first_success_after(outcomes, killed + 1.0) is not None
        failed = [o for o in outcomes if o.status != 200]
        slowest = max(o.end - o.start for o in outcomes)
        with capsys.disabled():
            print(f"\n  replica killed: {len(outcomes)} requests, {len(failed)} failed, slowest {slowest:.1f} s")
    finally:
        # Back to where it was: the same container, serving again.
        run(["docker", "start", victim])
        wait_until_serving(victim)


def test_killing_the_torchserve_worker_answers_200_or_json_503_and_recovers_by_itself(stack, capsys):
    (torchserve,) = stack.container_ids("torchserve")
    (old_pid, _status), *_ = describe_workers(stack)
    outcomes, killed = under_load(
        stack.url,
        # As the container's own user (no capabilities needed): the worker dies as on a crash.
        lambda: run(["docker", "exec", torchserve, "pkill", "-KILL", "-f", "model_service_worker"]),
        settled=lambda outcomes, done: first_success_after(outcomes, done) is not None,
    )
    bad = [str(o) for o in outcomes if not (o.status == 200 or (o.status == 503 and o.json_body and o.retry_after))]
    assert not bad, f"answers other than 200 or a JSON 503 with Retry-After: {bad}"
    recovered = first_success_after(outcomes, killed)
    assert recovered is not None, "no request succeeded within 30 s of the kill"
    assert recovered.end - killed <= 30
    workers = describe_workers(stack)
    assert [status for _, status in workers] == ["READY"]
    assert workers[0][0] != old_pid, "TorchServe did not start a new worker"
    with capsys.disabled():
        print(f"\n  worker killed: {len(outcomes)} requests, first success {recovered.end - killed:.1f} s after")


def test_killing_one_of_two_torchserve_containers_under_load_loses_no_request_three_times(stack, capsys):
    facades = len(stack.container_ids("app"))
    stack.compose_run("up", "-d", "--scale", "torchserve=2", "--scale", f"app={facades}")
    figures, ready = [], []
    try:
        for kill in range(3):
            stack.wait_healthy(services=("torchserve",))
            victim = sorted(stack.container_ids("torchserve"))[kill % 2]
            outcomes, _ = under_load(
                stack.url,
                lambda victim=victim: run(["docker", "kill", victim]),
                # Past the facades' next DNS lookup (every 5 s), with answers from the survivor.
                settled=lambda outcomes, done: sum(o.start > done + 5 and o.status == 200 for o in outcomes) >= CLIENTS,
                min_after_s=5.5,
            )
            ready.append(requests.get(f"{stack.url}/readyz", timeout=10).status_code)
            lost = [str(o) for o in outcomes if o.status != 200]
            slowest = max(o.end - o.start for o in outcomes)
            figures.append((len(outcomes), lost, slowest))
            run(["docker", "start", victim])
    finally:
        with capsys.disabled():
            for number, (sent, lost, slowest) in enumerate(figures, 1):
                print(
                    f"\n  TorchServe kill {number} of 3 (Compose): {sent} requests, {len(lost)} lost, "
                    f"slowest {slowest:.2f} s"
                )
        stack.compose_run("up", "-d", "--scale", "torchserve=1", "--scale", f"app={facades}")
        stack.wait_healthy()

    assert len(figures) == 3
    assert [lost for _, lost, _ in figures] == [[], [], []]
    assert ready == [200, 200, 200]


def test_stopped_torchserve_answers_json_503_and_the_service_recovers_when_it_starts(stack, capsys):
    (torchserve,) = stack.container_ids("torchserve")
    facades = {cid: stack.inspect(cid)["State"]["StartedAt"] for cid in stack.container_ids("app")}
    run(["docker", "stop", "--time", "30", torchserve])
    try:
        response = requests.post(f"{stack.url}/", json={"text": TEXT}, timeout=15)
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "backend_unavailable"
        assert int(response.headers["Retry-After"]) >= 1
        response = requests.get(f"{stack.url}/readyz", timeout=15)
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "backend_unavailable"
    finally:
        started = time.monotonic()
        run(["docker", "start", torchserve])
    status = None
    while time.monotonic() - started < 120:
        try:
            status = requests.post(f"{stack.url}/", json={"text": TEXT}, timeout=15).status_code
        except requests.RequestException as exc:
            status = repr(exc)
        if status == 200:
            break
        time.sleep(0.25)
    assert status == 200, f"no recovery within 120 s of `docker start` (last: {status})"
    with capsys.disabled():
        print(f"\n  TorchServe restarted: first success {time.monotonic() - started:.1f} s after `docker start`")
    # Recovered by itself: the same facades, none restarted.
    assert {cid: stack.inspect(cid)["State"]["StartedAt"] for cid in stack.container_ids("app")} == facades
