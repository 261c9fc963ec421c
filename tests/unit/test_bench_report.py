"""The benchmark suite's arithmetic: medians over rounds, ratios to the baseline, targets."""

from __future__ import annotations

from bench.report import Benchmark, Metric, Target


def suite() -> Benchmark:
    result = Benchmark(
        name="consumer",
        title="drain",
        metrics=[Metric("msg_per_s", "throughput", "msg/s", True), Metric("cpu_us", "CPU", "us", False)],
        baseline="raw",
        variants=["raw", "traced"],
        targets=[
            Target("traced CPU", "cpu_us", "traced", "raw", 1.25, at_most=True),
            Target("traced speed", "msg_per_s", "traced", "raw", 0.5),
        ],
    )
    for raw, traced in [((1000, 100), (400, 150)), ((1200, 90), (500, 110)), ((900, 300), (450, 120))]:
        result.add("raw", {"msg_per_s": raw[0], "cpu_us": raw[1]})
        result.add("traced", {"msg_per_s": traced[0], "cpu_us": traced[1]})
    return result


def test_medians_resist_one_bad_round() -> None:
    assert suite().medians() == {
        "raw": {"msg_per_s": 1000, "cpu_us": 100},
        "traced": {"msg_per_s": 450, "cpu_us": 120},
    }


def test_targets_compare_medians_measured_in_the_same_run() -> None:
    medians = suite().medians()
    cpu, speed = suite().targets
    assert cpu.check(medians) == (1.2, True)
    assert speed.check(medians) == (0.45, False)


def test_table_shows_ratios_and_verdicts() -> None:
    table = suite().table()
    assert "| traced  |" in table and "0.45x" in table and "1.20x" in table
    assert "traced CPU: 1.20x (needs <= 1.25x) MET" in table
    assert "traced speed: 0.45x (needs >= 0.5x) NOT MET" in table


def test_a_missing_variant_fails_its_target_instead_of_crashing() -> None:
    result = suite()
    del result.samples["traced"]
    assert result.targets[0].check(result.medians()) == (None, False)
