"""Saturation is explicit: a request that cannot end in time stops, and the heavy ones run at once adapt."""

import pytest

from facade.admission import HeavyRequests, projected_overrun_s


@pytest.mark.parametrize(
    ("elapsed_s", "done", "left", "left_s", "overrun_s"),
    [(2.0, 2, 4, 13.0, -9.0), (6.0, 2, 4, 9.0, 3.0), (0.0, 0, 16, 15.0, 0.0), (5.0, 3, 0, 1.0, 0.0)],
)
def test_the_overrun_is_projected_at_the_pace_of_the_jobs_done(elapsed_s, done, left, left_s, overrun_s):
    assert projected_overrun_s(elapsed_s, done, left, left_s) == pytest.approx(overrun_s)


def test_a_late_request_halves_the_limit_and_requests_in_time_raise_it_slowly_back():
    heavy = HeavyRequests(ceiling=8, read_timeout_s=15.0)
    assert [heavy.try_start() for _ in range(9)] == [True] * 8 + [False]
    for _ in range(8):
        heavy.finish(in_time=False, duration_s=15.0)
    assert heavy.limit == 1.0  # halved, never below one
    assert [heavy.try_start() for _ in range(2)] == [True, False]
    heavy.finish(in_time=True, duration_s=4.2)
    assert heavy.limit == 2.0
    assert heavy.retry_after_s() == 5  # what the request in time took, rounded up
    for _ in range(100):
        heavy.try_start()
        heavy.finish(in_time=True, duration_s=4.2)
    assert heavy.limit == 8.0  # never past the ceiling


def test_retry_after_is_one_read_timeout_until_a_request_was_timed():
    assert HeavyRequests(ceiling=4, read_timeout_s=15.0).retry_after_s() == 15
