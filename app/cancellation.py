"""Stopping background asyncio tasks for sure: `stop_task` cancels until the cancellation takes and waits
for the end; `cancel_until_done` does the same without waiting.

Why a single `task.cancel()` is not enough here: on Python 3.11 (which this project supports),
`asyncio.wait_for` returns the awaited result instead of raising `CancelledError` when the cancellation
lands in the same loop iteration in which what it waits for completes (CPython gh-86296, fixed in 3.12).
PyMongo's async network layer waits in `asyncio.wait_for` for every socket read and write, so a loop
cancelled while a MongoDB reply arrives can carry on as if nothing happened, and whoever awaits it after
one `cancel()` waits forever. The test suite caught exactly that: the lifespan's shutdown hung for five
minutes in `ExpirySweeper.stop` while the sweeper kept sweeping. Our own code waits with
`asyncio.timeout`, which is correct on 3.11; the driver's waits are out of our hands, hence this.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

#: How long to wait for a cancelled task to end before cancelling it again.
RECANCEL_SECONDS = 0.5


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel `task` and return once it has ended, cancelling it again every `RECANCEL_SECONDS` in case
    a cancellation was lost (see the module docstring).

    A task that ended with an exception of its own (not a cancellation) has that exception raised here,
    as awaiting it would. If the caller is cancelled meanwhile, the task is cancelled once more and the
    caller's cancellation goes on."""
    if task is None:
        return
    while not task.done():
        task.cancel()
        try:
            await asyncio.wait({task}, timeout=RECANCEL_SECONDS)
        except asyncio.CancelledError:
            task.cancel()
            raise
    with contextlib.suppress(asyncio.CancelledError):
        task.result()


def cancel_until_done(task: asyncio.Task[Any]) -> None:
    """Cancel `task` now, and again every `RECANCEL_SECONDS` until it has ended, without waiting for it:
    for a caller that must not block on the task, such as a watcher ending the request it watches."""
    if task.done():
        return
    task.cancel()
    asyncio.get_running_loop().call_later(RECANCEL_SECONDS, cancel_until_done, task)


async def stop_tasks(tasks: list[asyncio.Task[Any]]) -> None:
    """`stop_task` for each of these, all cancelled at once; every one has ended when this returns."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        await stop_task(task)
