"""Saturation is explicit: a request that cannot end in time stops, and new multi-job work is turned away."""

import pytest

from facade.admission import Saturation, projected_overrun_s, retry_after_s


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.mark.parametrize(
    ("elapsed_s", "done", "left", "left_s", "overrun_s"),
    [(2.0, 2, 4, 13.0, -9.0), (6.0, 2, 4, 9.0, 3.0), (0.0, 0, 16, 15.0, 0.0), (5.0, 3, 0, 1.0, 0.0)],
)
def test_the_overrun_is_projected_at_the_pace_of_the_jobs_done(elapsed_s, done, left, left_s, overrun_s):
    assert projected_overrun_s(elapsed_s, done, left, left_s) == pytest.approx(overrun_s)


@pytest.mark.parametrize(("overrun_s", "expected"), [(0.1, 1), (3.2, 4), (400.0, 15)])
def test_retry_after_covers_the_overrun_within_one_read_timeout(overrun_s, expected):
    assert retry_after_s(overrun_s, 15.0) == expected


def test_saturation_lasts_as_long_as_marked_then_ends_by_itself():
    clock = Clock()
    saturation = Saturation(clock)
    assert saturation.retry_after_s() == 0
    saturation.mark(3)
    saturation.mark(1)  # a shorter mark does not cut the longer one
    assert saturation.retry_after_s() == 3
    clock.now += 2.5
    assert saturation.retry_after_s() == 1
    clock.now += 1
    assert saturation.retry_after_s() == 0
