"""MongoDB command latency by command and collection (`agent_tasks_mongodb_command_*`), from PyMongo's
command monitoring, on the app's client (`app/resources.py`; not the event hub's, whose change stream's
`getMore` waits for events by design and would read as slowness).

PyMongo calls a listener synchronously on the driver's path for every command, so it must be cheap: the
started event's collection is kept in a dict under the command's request id until its reply (a dict
insert and pop; the histogram's observe is a lock and an add). The `command` label is the command's name
(the driver's small set); the `collection` label is the collection the command names, bounded like
every label value (`BoundedLabel`), empty for commands on no collection (`hello`, `commitTransaction`).

Invariant: every started entry MUST be popped by its succeeded or failed event; an entry whose reply
never comes (a connection torn down mid-command reports a failure, so this is defensive) is dropped
when the dict passes `MAX_IN_FLIGHT`, so the dict never grows without bound.
"""

from __future__ import annotations

from typing import Any

from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
)

from app import instruments

#: Commands in flight remembered at most (far above any pool's size: only a lost reply can leave one).
MAX_IN_FLIGHT = 10_000
#: Commands whose first value is not a collection name (`getMore` names it in `collection`).
_COLLECTION_FIELD = {"getMore": "collection"}


class CommandMetrics(CommandListener):
    """Times every command of the client it is registered on (`make_client(listeners=...)`)."""

    def __init__(self) -> None:
        self._collections: dict[tuple[int, object], str] = {}
        self._meters = instruments.get()
        #: The histogram's child per (command, collection): `labels()` takes a lock and checks its
        #: arguments on every call; a dict lookup does not (the pairs are bounded: see the module).
        self._timers: dict[tuple[str, str], Any] = {}

    def started(self, event: CommandStartedEvent) -> None:
        name = event.command_name
        value = event.command.get(_COLLECTION_FIELD.get(name, name))
        if len(self._collections) >= MAX_IN_FLIGHT:
            self._collections.clear()
        self._collections[(event.request_id, event.connection_id)] = (
            self._meters.collections(value) if isinstance(value, str) else ""
        )

    def _observe(self, name: str, collection: str, micros: int) -> None:
        timer = self._timers.get((name, collection))
        if timer is None:
            timer = self._timers[(name, collection)] = self._meters.mongo_duration.labels(name, collection)
        timer.observe(micros / 1_000_000)

    def succeeded(self, event: CommandSucceededEvent) -> None:
        collection = self._collections.pop((event.request_id, event.connection_id), "")
        self._observe(event.command_name, collection, event.duration_micros)

    def failed(self, event: CommandFailedEvent) -> None:
        collection = self._collections.pop((event.request_id, event.connection_id), "")
        self._observe(event.command_name, collection, event.duration_micros)
        self._meters.mongo_failures.labels(event.command_name, collection).inc()
