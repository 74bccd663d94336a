"""One poller for every test: wait for a condition with a generous deadline, never for a fixed time.

The suite runs on loaded machines (other workers, other agents, a background load), so a test never
sleeps "long enough" for something to happen and never asserts how long something took (timing belongs
in bench/): it polls for the condition it needs and fails, naming what it waited for, only after a
deadline far past what the condition takes on an idle machine.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

# Seconds: minutes' worth of margin over the fraction of a second a condition takes on an idle machine.
DEADLINE = 60.0


async def until(
    condition: Callable[[], object | Awaitable[object]],
    what: str = "the condition",
    *,
    within: float = DEADLINE,
    every: float = 0.05,
) -> None:
    """Poll `condition` (a function, or a coroutine function) until it returns something true; fail
    after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        assert loop.time() < deadline, f"timed out after {within} s waiting for {what}"
        await asyncio.sleep(every)


def wait_until(
    condition: Callable[[], object],
    what: str = "the condition",
    *,
    within: float = DEADLINE,
    every: float = 0.1,
) -> None:
    """`until` for synchronous tests (and threads): blocks between polls."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {within} s waiting for {what}"
        time.sleep(every)
