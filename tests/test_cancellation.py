"""`app.cancellation.stop_task`: a background loop ends even when a cancellation is lost on the way.

Python 3.11's `asyncio.wait_for` (which PyMongo's async network layer waits in) returns the awaited
result instead of raising when the cancellation lands as the result arrives; the lifespan's shutdown
once hung five minutes on a sweeper that had lost its cancellation that way."""

from __future__ import annotations

import asyncio
import sys

import pytest

from app.cancellation import cancel_until_done, stop_task, stop_tasks


async def _loop_that_loses_one_cancellation(ticks: list[int]) -> None:
    """Swallows the first cancellation (as the driver's wait_for can), then carries on as a loop does."""
    lost = False
    while True:
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            if lost:
                raise
            lost = True
        ticks.append(1)


async def test_a_lost_cancellation_is_repeated_until_the_task_ends() -> None:
    ticks: list[int] = []
    task = asyncio.create_task(_loop_that_loses_one_cancellation(ticks))
    await asyncio.sleep(0.05)
    # One cancel, then an await, is what the lifespan did before: it never returns here.
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=0.3)
    assert not done and len(ticks) > 5  # the loop goes on after losing its cancellation
    async with asyncio.timeout(30):
        await stop_task(task)
    assert task.cancelled()


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="asyncio.wait_for keeps cancellations from 3.12 on")
async def test_python_3_11_wait_for_loses_a_cancellation_that_stop_task_repeats() -> None:
    """The real cause, reproduced deterministically: the awaited future completes, and the task is
    cancelled before it resumes. `asyncio.wait_for` then returns the result instead of raising."""
    loop = asyncio.get_running_loop()
    rounds: list[asyncio.Future[None]] = []

    async def waits_in_wait_for() -> None:
        while True:
            future: asyncio.Future[None] = loop.create_future()
            rounds.append(future)
            await asyncio.wait_for(future, 10)

    task = asyncio.create_task(waits_in_wait_for())
    await asyncio.sleep(0)
    rounds[-1].set_result(None)
    task.cancel()  # lands in the same loop iteration as the result
    await asyncio.sleep(0.05)
    assert not task.done() and len(rounds) == 2  # the cancellation was lost: it waits on its next round
    async with asyncio.timeout(30):
        await stop_task(task)
    assert task.cancelled()


async def test_stop_task_raises_what_the_task_raised_and_accepts_none() -> None:
    async def fails() -> None:
        raise ValueError("broken loop")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    with pytest.raises(ValueError, match="broken loop"):
        await stop_task(task)
    await stop_task(None)


async def test_stop_tasks_ends_every_one() -> None:
    tickers: list[list[int]] = [[], [], []]
    tasks = [asyncio.create_task(_loop_that_loses_one_cancellation(t)) for t in tickers]
    await asyncio.sleep(0.03)
    async with asyncio.timeout(30):
        await stop_tasks(tasks)
    assert all(t.cancelled() for t in tasks)


async def test_cancel_until_done_repeats_without_waiting() -> None:
    """For a caller that must not block (a watcher ending the request it watches): it returns at once,
    and the task ends even though it lost the first cancellation."""
    ticks: list[int] = []
    task = asyncio.create_task(_loop_that_loses_one_cancellation(ticks))
    await asyncio.sleep(0.03)
    cancel_until_done(task)
    assert not task.done()  # returned without waiting
    async with asyncio.timeout(30):
        await asyncio.wait({task})
    assert task.cancelled()
