"""engine.core.progress: the throttle the window puts at the engine→Qt boundary, the time-left clocks
and their formatting, driven by a fake clock (no test sleeps)."""
from __future__ import annotations

import pytest

from engine.core.progress import EpochClock, StageClock, Throttle, format_duration, stage_title


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 0.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- Throttle -------------------------------------------------------------------------------------
def test_throttle_passes_the_first_call_then_at_most_one_per_interval():
    clock = FakeClock()
    throttle = Throttle(0.1, clock)
    assert throttle.ready("features", 1, 100)
    assert not throttle.ready("features", 2, 100)
    clock.advance(0.05)
    assert not throttle.ready("features", 3, 100)
    clock.advance(0.05)
    assert throttle.ready("features", 4, 100)
    assert not throttle.ready("features", 5, 100), "the interval counts from the last call let through"


def test_throttle_always_passes_a_new_stage_and_the_last_step():
    clock = FakeClock()
    throttle = Throttle(0.1, clock)
    assert throttle.ready("features", 1, 10)
    assert throttle.ready("features", 10, 10), "done == total is never dropped"
    assert throttle.ready("evaluate", 1, 40), "a new stage shows at once"
    assert not throttle.ready("evaluate", 2, 40)


def test_a_burst_through_the_throttle_keeps_few_calls_and_the_last():
    clock = FakeClock()
    throttle = Throttle(0.1, clock)
    passed = []
    for done in range(1, 10_001):
        clock.advance(0.0001)                 # 10,000 steps in one second
        if throttle.ready("features", done, 10_000):
            passed.append(done)
    assert passed[0] == 1 and passed[-1] == 10_000
    assert 10 <= len(passed) <= 12


# -- StageClock -----------------------------------------------------------------------------------
def test_stage_clock_waits_for_a_rate_then_extrapolates_it():
    clock = FakeClock()
    stage = StageClock(min_fraction=0.02, min_seconds=1.0, clock=clock)
    assert stage.update("features", 0, 1000) is None, "no rate at the start"
    clock.advance(0.5)
    assert stage.update("features", 100, 1000) is None, "too soon to trust"
    clock.advance(0.5)
    assert stage.update("features", 200, 1000) == pytest.approx(4.0)      # 200 per second, 800 left
    clock.advance(1.0)
    assert stage.update("features", 400, 1000) == pytest.approx(3.0)


def test_stage_clock_restarts_for_a_new_stage_and_when_done_goes_back():
    clock = FakeClock()
    stage = StageClock(min_fraction=0.0, min_seconds=1.0, clock=clock)
    stage.update("features", 0, 100)
    clock.advance(10)
    assert stage.update("features", 50, 100) == pytest.approx(10.0)
    assert stage.update("evaluate", 0, 40) is None, "evaluation's speed is not the feature pass's"
    clock.advance(2)
    assert stage.update("evaluate", 20, 40) == pytest.approx(2.0)
    assert stage.update("evaluate", 5, 40) is None, "a second pass of the same stage starts over"
    assert stage.update("features", 10, 30) is None
    clock.advance(1)
    assert stage.update("features", 20, 30) == pytest.approx(1.0)
    assert stage.update("features", 5, 60) is None, "the next split's pass has its own total and rate"


def test_stage_clock_needs_a_minimum_fraction_done():
    clock = FakeClock()
    stage = StageClock(min_fraction=0.1, min_seconds=0.0, clock=clock)
    stage.update("images", 0, 1000)
    clock.advance(5)
    assert stage.update("images", 50, 1000) is None
    assert stage.update("images", 100, 1000) == pytest.approx(45.0)


# -- EpochClock -----------------------------------------------------------------------------------
def batch(epoch: int, done: int, of: int, eta_s: float = 0.0) -> dict:
    return {"epoch": epoch, "batch": done, "batches": of, "eta_s": eta_s}


def test_epoch_clock_fraction_covers_the_whole_fit():
    clock = EpochClock(4, FakeClock())
    assert clock.fraction(batch(1, 5, 10)) == pytest.approx(0.125)
    assert clock.fraction(batch(3, 10, 10)) == pytest.approx(0.75)
    assert clock.fraction(batch(4, 10, 10)) == pytest.approx(1.0)


def test_epoch_clock_during_the_first_epoch_extrapolates_the_time_so_far():
    fake = FakeClock()
    clock = EpochClock(3, fake)
    fake.advance(20)                            # a quarter of epoch 1 took 20 s: 80 s an epoch
    assert clock.eta(batch(1, 25, 100)) == pytest.approx(60 + 2 * 80)


def test_epoch_clock_then_uses_the_last_measured_epoch():
    fake = FakeClock()
    clock = EpochClock(5, fake)
    clock.epoch_ended(30.0)                     # validation included
    fake.advance(1000)                          # wall time since the start no longer matters
    assert clock.eta(batch(2, 50, 100, eta_s=12.0)) == pytest.approx(12 + 3 * 30)
    clock.epoch_ended(10.0)                     # a faster (e.g. head-only) stage
    assert clock.eta(batch(5, 100, 100, eta_s=0.0)) == 0.0


# -- formatting -----------------------------------------------------------------------------------
@pytest.mark.parametrize("seconds, text", [(0, "0:00"), (-3, "0:00"), (42.9, "0:42"), (725, "12:05"),
                                           (3723, "1:02:03"), (36000, "10:00:00")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_stage_title_names_known_stages_and_shows_others_as_they_are():
    assert stage_title("features") == "Computing backbone features"
    assert stage_title("evaluate") == "Evaluating"
    assert stage_title("Loading the model") == "Loading the model"
