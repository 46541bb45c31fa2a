"""Heavy clients cannot starve a light one (bench/abuse.py's run, short form, on the shared stack).

Three clients send the largest request the limits allow (the served handler's
max_request_tokens from GET /info, as texts at the model's token limit) back to back for 20 s while a fourth
sends one-sentence requests. `make abuse` runs the same for 60 s and prints the figures.

The light client's p99 bound is light_p99_bound_s(largest, light) = 3 x largest + 4 x light, where
both are measured on the idle stack in the same run: a batch holds about one largest request's
worth of tokens (handler.batch_budget_tokens, plus an eighth), and among jobs of the same rank the
cheapest go first, so a light request waits for at most the batch in progress (one largest
request) and then runs in the next, next to at most one largest request (a second one); the third
is room for what the flood itself costs on the same cores. A heavy request waits its turn: at most
one largest request per heavy client ahead of it, plus its own, plus the light client's bound.
Since every term is measured, the bounds hold on a CPU twice slower or twice faster.
"""

import pytest
import requests

from bench.abuse import abuse, failures
from facade.settings import Settings
from stack.launcher import running_groups

pytestmark = pytest.mark.integration

FLOOD_S = 20.0
HEAVY_CLIENTS = 3


@pytest.fixture(scope="module")
def figures(shared_stack):
    pgid = running_groups(shared_stack)["torchserve"]
    result = abuse(shared_stack.url, FLOOD_S, heavy_clients=HEAVY_CLIENTS, torchserve_pgid=pgid)
    print(result)
    return result


def test_the_light_client_gets_no_5xx_and_its_p99_stays_under_the_measured_bound(figures):
    # Served throughout: at least one answer per bound's worth of flood (the bound is a p99).
    assert figures["light_requests"] >= FLOOD_S // figures["light_p99_bound_s"], figures
    assert figures["light_requests"] >= 1, figures
    assert all(status < "500" and status != "0" for status in figures["light_statuses"]), figures
    assert figures["light_p99_s"] <= figures["light_p99_bound_s"], figures
    assert failures(figures) == []


def test_heavy_clients_are_served_in_their_turn_never_a_hang(figures):
    assert set(figures["heavy_statuses"]) <= {"200", "429", "503"}, figures
    assert figures["heavy_statuses"].get("200", 0) >= 1, figures
    assert figures["heavy_max_s"] <= heavy_turn_s(figures), figures


def heavy_turn_s(figures):
    """Processor sharing: one largest request per heavy client ahead of a heavy one, then its own."""
    return (HEAVY_CLIENTS + 1) * figures["largest_request_idle_s"] + figures["light_p99_bound_s"]


def test_the_worker_is_idle_within_seconds_after_the_heavy_clients_stop(figures):
    # Their last requests finish in their turn, then nothing is left queued or running:
    # TorchServe's own CPU use drops (other load on the machine does not count).
    assert figures["idle_after_s"] is not None, figures
    assert figures["idle_after_s"] <= heavy_turn_s(figures), figures


def test_a_request_over_the_token_limit_gets_413_too_many_tokens_saying_how_to_split_it(shared_stack):
    # The request: 64 texts of 9,000 characters, inside the body and character limits.
    body = {"texts": [("a fine film " * 750)[:9000]] * 64}
    answers = [requests.post(shared_stack.url, json=body, timeout=60) for _ in range(6)]
    limit = Settings().max_request_tokens  # the facade's limit per request (docs/overload.md)

    for answer in answers:
        assert answer.status_code == 413, answer.text[:300]
        error = answer.json()["error"]
        assert error["code"] == "too_many_tokens"
        assert f"limit of {limit} tokens" in error["message"] and "split them into at least" in error["message"]
