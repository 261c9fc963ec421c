"""The soak's verdict: levelled off means flat over the last third of the load, not merely slower."""

from __future__ import annotations

from bench.soak import Series, analyse, levels_off


def _series(rss: list[float], *, idle_tail: int = 0) -> Series:
    # 20 orders per 2 s sample, then `idle_tail` samples with no new orders (the load waiting
    # for its last outcomes, and the idle sample after it).
    n = len(rss)
    requests = [40 * i for i in range(n - idle_tail)] + [40 * (n - idle_tail - 1)] * idle_tail
    return Series(
        seconds=[2.0 * i for i in range(n)],
        requests=requests,
        messages=[3 * r for r in requests],
        rss_mb={"svc": rss},
    )


def test_a_heap_that_fills_then_stays_levels_off() -> None:
    rss = [100 + min(i, 60) * 0.1 for i in range(240)]
    found = analyse(_series(rss), warmup=0)["svc"]
    assert found["first_third_per_10k_requests"] > 10
    assert abs(found["last_third_per_10k_requests"]) < 0.01
    assert levels_off(found)


def test_steady_growth_does_not_level_off() -> None:
    rss = [100 + i * 0.01 for i in range(240)]  # 2.5 MB per 10k requests, all the way
    assert not levels_off(analyse(_series(rss), warmup=0)["svc"])


def test_growth_that_only_slows_down_does_not_level_off() -> None:
    # 10 MB per 10k requests, then 2.5: a quarter of the pace, still climbing.
    rss = [100 + (i * 0.04 if i < 120 else 4.8 + (i - 120) * 0.01) for i in range(240)]
    found = analyse(_series(rss), warmup=0)["svc"]
    assert found["last_third_per_10k_requests"] < found["first_third_per_10k_requests"] / 2
    assert not levels_off(found)


def test_samples_after_the_last_order_are_left_out_of_the_fits() -> None:
    # Flat under load, then a 2 MB step while the load waits for its last outcomes.
    rss = [110.0] * 200 + [112.0] * 20
    found = analyse(_series(rss, idle_tail=20), warmup=0)["svc"]
    assert abs(found["last_third_per_10k_requests"]) < 0.01
    assert found["end_mb"] == 110.0
    assert levels_off(found)
