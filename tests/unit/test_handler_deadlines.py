"""A handler past its time limit is cancelled with a TimeoutError; nothing else is."""

from __future__ import annotations

import asyncio

import pytest

from lantern_runtime.messaging.deadlines import HandlerDeadlines


async def limited(deadlines: HandlerDeadlines, seconds: float) -> str:
    watch = deadlines.watch()
    try:
        await asyncio.sleep(seconds)
    except BaseException as error:
        if deadlines.leave(watch, error):
            raise TimeoutError from error
        raise
    deadlines.leave(watch, None)
    return "done"


async def test_a_handler_past_its_limit_raises_timeout_error() -> None:
    deadlines = HandlerDeadlines(0.2)
    started = asyncio.get_running_loop().time()
    with pytest.raises(TimeoutError):
        await asyncio.create_task(limited(deadlines, 30))
    # Stopped within a tenth of the limit after it.
    assert 0.2 <= asyncio.get_running_loop().time() - started < 0.35


async def test_handlers_within_their_limit_finish_and_leave_no_check_behind() -> None:
    deadlines = HandlerDeadlines(0.5)
    results = await asyncio.gather(*(asyncio.create_task(limited(deadlines, 0.01 * i)) for i in range(20)))
    assert results == ["done"] * 20
    await asyncio.sleep(0.1)  # the next check finds nothing in flight and schedules no more
    assert deadlines._check_handle is None


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    deadlines = HandlerDeadlines(5)
    task = asyncio.create_task(limited(deadlines, 30))
    await asyncio.sleep(0.05)
    task.cancel()  # as a shutdown would
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_a_cancellation_at_the_limit_and_from_elsewhere_is_not_swallowed() -> None:
    deadlines = HandlerDeadlines(0.1)

    async def cancelled_twice() -> None:
        watch = deadlines.watch()
        try:
            await asyncio.sleep(30)
        except BaseException as error:
            asyncio.current_task().cancel()  # type: ignore[union-attr]  # shutdown, in the same moment
            if deadlines.leave(watch, error):
                raise TimeoutError from error
            raise

    task = asyncio.create_task(cancelled_twice())
    with pytest.raises(asyncio.CancelledError):
        await task


@pytest.mark.parametrize("seconds", [0, -1])
def test_a_limit_must_be_positive(seconds: float) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        HandlerDeadlines(seconds)
