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


def test_a_target_is_the_median_of_the_ratios_within_each_round() -> None:
    result = suite()
    cpu, speed = result.targets
    # CPU per round: 150/100, 110/90, 120/300; throughput: 400/1000, 500/1200, 450/900.
    assert cpu.check(result.samples) == (110 / 90, True)
    assert speed.check(result.samples) == (500 / 1200, False)


def test_table_shows_ratios_and_verdicts() -> None:
    table = suite().table()
    assert "| traced  |" in table and "0.45x" in table and "1.20x" in table
    assert "traced CPU: 1.22x (rounds 1.50, 1.22, 0.40; needs <= 1.25x) MET" in table
    assert "traced speed: 0.42x (rounds 0.40, 0.42, 0.50; needs >= 0.5x) NOT MET" in table


def test_a_missing_variant_fails_its_target_instead_of_crashing() -> None:
    result = suite()
    del result.samples["traced"]
    assert result.targets[0].check(result.samples) == (None, False)
    assert "traced CPU: n/a (needs <= 1.25x) NOT MET" in result.table()


def test_variants_with_different_numbers_of_rounds_are_not_paired() -> None:
    result = suite()
    result.samples["traced"].pop()
    assert result.targets[0].check(result.samples) == (None, False)


def test_a_ratio_without_a_bound_is_reported_with_no_verdict() -> None:
    result = suite()
    result.targets = [Target("traced vs raw", "cpu_us", "traced", "raw")]
    line = next(line for line in result.table().splitlines() if "traced vs raw" in line)
    assert line == "ratio: traced vs raw: 1.22x (rounds 1.50, 1.22, 0.40)"
    assert result.as_json()["targets"][0]["met"] is None
