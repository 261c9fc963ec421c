"""The gateway's JSON checks: the depth scan agrees with a JSON parser on every generated
document, takes linear time on the bodies that made the old regex quadratic, and media types
are recognised as JSON however they are spelled."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.proxy import is_json, json_depth

# Strings full of what could confuse a scan: brackets, quotes, backslashes, escapes, non-ASCII.
TRICKY_TEXT = st.text(alphabet=st.sampled_from('[]{}"\\/ab ,:\n\tü€😀'), max_size=12)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TRICKY_TEXT
DOCUMENTS = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TRICKY_TEXT, children, max_size=4),
    max_leaves=60,
)


def nesting(value: Any) -> int:
    """The true depth, from the parsed object: arrays and objects count, scalars do not."""
    if isinstance(value, list):
        return 1 + max(map(nesting, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(nesting, value.values()), default=0)
    return 0


@settings(max_examples=400, deadline=None)
@given(
    document=DOCUMENTS,
    ensure_ascii=st.booleans(),
    indent=st.none() | st.integers(0, 2),
    compact=st.booleans(),
)
def test_the_scan_finds_the_depth_json_loads_parses(
    document: Any, ensure_ascii: bool, indent: int | None, compact: bool
) -> None:
    separators = (",", ":") if compact else (", ", ": ")
    text = json.dumps(document, ensure_ascii=ensure_ascii, indent=indent, separators=separators)
    assert json_depth(text.encode()) == nesting(json.loads(text))


def reference_depth(body: bytes) -> tuple[int, int]:
    """A byte-at-a-time state machine (in a string or not, after a backslash or not), as a
    parser reads: the depth reached, and where it stops (at a backslash outside a string)."""
    depth = deepest = 0
    in_string = escaped = False
    for at, byte in enumerate(body):
        if escaped:
            escaped = False
        elif byte == ord("\\"):
            if not in_string:
                return deepest, at
            escaped = True
        elif byte == ord('"'):
            in_string = not in_string
        elif not in_string and byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif not in_string and byte in b"]}":
            depth -= 1
    return deepest, len(body)


@settings(max_examples=400, deadline=None)
@given(
    body=st.lists(
        st.sampled_from([b"[", b"]", b"{", b"}", b'"', b"\\", b'\\"', b"\\\\", b"a", b","]),
        max_size=80,
    ).map(b"".join)
)
def test_on_any_bracket_soup_the_scan_is_the_byte_state_machine(body: bytes) -> None:
    # Truncated, unterminated, unbalanced: up to where a parser would stop, they agree.
    deepest, stop = reference_depth(body)
    assert json_depth(body[:stop]) == deepest


@pytest.mark.parametrize("limit", [1, 5, 32])
def test_past_the_limit_the_scan_stops_with_a_depth_over_it(limit: int) -> None:
    body = b"[" * 1_000_000
    assert json_depth(body, limit) == limit + 1
    assert json_depth(b"[" * limit + b"]" * limit, limit) == limit


MIB = 1024 * 1024
WORST_BODIES = {
    # What made the old regex quadratic: 32 KB of it took 4 s there.
    "quote-then-escaped-quotes": b'"' + b'\\"' * (MIB // 2),
    "backslashes": b'"' + b"\\" * MIB,
    "quotes": b'"' * MIB,
    "short-strings": b"[" + b'"a",' * (MIB // 4) + b"0]",
    "flat-arrays": b"[" + b"[]," * (MIB // 3) + b"0]",
    "nested": b"[" * MIB,
    "brackets-in-a-string": b'["' + b"[{" * (MIB // 2) + b'"]',
}


@pytest.mark.parametrize("name", list(WORST_BODIES))
def test_a_mebibyte_of_the_worst_bodies_is_scanned_in_well_under_a_second(name: str) -> None:
    body = WORST_BODIES[name]
    started = time.perf_counter()
    json_depth(body)
    assert time.perf_counter() - started < 0.5


def test_the_scan_time_grows_linearly_with_the_body() -> None:
    def seconds(size: int) -> float:
        body = b'"' + b'\\"' * size
        started = time.perf_counter()
        json_depth(body)
        return time.perf_counter() - started

    small = min(seconds(50_000) for _ in range(3))
    large = min(seconds(800_000) for _ in range(3))
    # Quadratic would be 256 times longer; linear is 16, with room for a noisy machine.
    assert large < 60 * small + 0.01


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "application/json",
        "application/JSON",
        "APPLICATION/Json",
        "application/json; charset=utf-8",
        "application/problem+json; charset=utf-8",
        "application/Problem+JSON",
        "application/vnd.x+json",
        " application/json ;charset=UTF-8",
        "text/json",
    ],
)
def test_json_media_types_are_recognised_however_spelled(content_type: str | None) -> None:
    assert is_json(content_type)


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/octet-stream",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=json",
        "text/plain; format=json",
        "application/jsonp",
        "json",
        "application/json-seq",
    ],
)
def test_other_media_types_are_not_json_even_when_a_parameter_says_json(content_type: str) -> None:
    assert not is_json(content_type)
