"""The executor the schema runs operations with: Strawberry's, with a per-event executor for subscriptions
whose memo caches are its own.

graphql-core 3.3 (3.3.2, the newest release) runs each subscription event on
`Executor.build_per_event_executor(payload)`, a shallow `copy` of the subscription's executor. The copy
shares the executor's memo caches, and the main one, `_relevant_sub_fields` (the sub-fields collected for
a field of an object type), is keyed by the identity of the field list, which is new for every event: each
event adds entries (and keeps their lists alive) for as long as the subscription lives. With 1,000
subscribers and 20 mutations/s that was ~0.85 MB/s of RSS, without bound. `docs/upstream/` has the
report, with a reproduction that uses graphql-core alone.

`EventScopedExecutor.build_per_event_executor` gives every event's executor fresh caches, so what one
event memoized is freed with it (the caches still serve their purpose within an event: a list of 100
events' sub-fields is collected once). Strawberry takes the class as `execution_context_class`.
"""

from __future__ import annotations

from typing import Any

from graphql.pyutils import RefMap
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

#: The memo caches an executor builds up while it runs, each reset to an empty instance of its type for
#: every event (the first is the leak; the others only fill with `@defer`/`@stream`, which subscriptions
#: refuse, and are reset so that stays true whatever graphql-core does next).
PER_EVENT_CACHES: tuple[tuple[str, type], ...] = (
    ("_relevant_sub_fields", dict),
    ("_stream_usages", RefMap),
    ("_initial_execution_plans", RefMap),
    ("_deferred_execution_plans", RefMap),
    ("groups", list),
    ("tasks", list),
    ("streams", list),
)


class EventScopedExecutor(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's executor; each subscription event runs with caches of its own (see the module)."""

    def build_per_event_executor(self, payload: Any) -> EventScopedExecutor:
        executor = super().build_per_event_executor(payload)
        assert isinstance(executor, EventScopedExecutor)
        for name, kind in PER_EVENT_CACHES:
            if name in executor.__dict__:
                setattr(executor, name, kind())
        return executor
