import pytest

from lantern_runtime.backoff import full_jitter_delay


def test_delay_stays_within_the_exponential_ceiling() -> None:
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (10, 5.0)]:
        delays = [full_jitter_delay(attempt, base=0.1, cap=5.0) for _ in range(200)]
        assert all(0 <= delay <= ceiling for delay in delays)
        # Full jitter: delays spread over the whole range rather than clustering at the top.
        assert min(delays) < ceiling / 2 < max(delays)


def test_attempts_are_counted_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        full_jitter_delay(0, base=0.1, cap=1.0)
