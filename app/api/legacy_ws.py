"""The legacy `graphql-ws` WebSocket protocol (Apollo's subscriptions-transport-ws) for every operation type.

That protocol's `start` message carries any operation: subscriptions-transport-ws ran queries and mutations
as well (one `data` message, then `complete`), and clients still use it for all three — `gql`'s
`WebsocketsTransport` offers it first. Strawberry's handler sends every `start` to `Schema.subscribe`,
which refuses queries and mutations (`InvalidOperationTypeError`, which reached clients masked as
"Unexpected error."). This handler runs them through `Schema.stream` instead, as Strawberry's
graphql-transport-ws handler does: a query or mutation yields its one result, a subscription its events.

Each operation reads through loaders of its own (`app/api/context.py` `ContextPerOperation`). An operation
over `MAX_SUBSCRIPTIONS_PER_CONNECTION` is refused with a message naming the limit (`live_limits.py`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from graphql import GraphQLError
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import CompleteMessage, ErrorMessage, StartMessage
from strawberry.types.execution import ExecutionResult, PreExecutionError

from app.api.context import Context
from app.api.live_limits import operation_limit_error


class GraphQLWSHandler(BaseGraphQLWSHandler[Context, None]):
    """Strawberry's legacy-protocol handler, running queries and mutations as well as subscriptions."""

    async def handle_start(self, message: StartMessage) -> None:
        limit = self.max_subscriptions_per_connection
        if (
            limit is not None
            and self.connection_acknowledged
            and message["id"] not in self.tasks  # Strawberry replaces those: no more operations
            and len(self.tasks) >= limit
        ):
            payload: Any = operation_limit_error(limit).formatted
            await self.send_message(ErrorMessage(type="error", id=message["id"], payload=payload))
            return
        await super().handle_start(message)

    async def handle_async_results(
        self,
        operation_id: str,
        query: str,
        operation_name: str | None,
        variables: dict[str, object] | None,
    ) -> None:
        # Strawberry's method with `stream` for `subscribe`; the bookkeeping is the same (what `stop`,
        # the subscription cap and the cleanup on disconnect rely on).
        try:
            result_source = await self.schema.stream(
                query=query,
                variable_values=variables,
                operation_name=operation_name,
                context_value=self.context,
                root_value=self.root_value,
            )
            self.subscriptions[operation_id] = result_source
            is_first_result = True
            async for result in result_source:
                if is_first_result and isinstance(result, PreExecutionError):
                    assert result.errors
                    payload = result.errors[0].formatted
                    await self.send_message(ErrorMessage(type="error", id=operation_id, payload=payload))
                    return
                if not isinstance(result, ExecutionResult):
                    # @defer / @stream frames (not enabled in this schema): the protocol cannot carry them.
                    error = GraphQLError("Incremental delivery is not supported over graphql-ws.")
                    await self.send_message(
                        ErrorMessage(type="error", id=operation_id, payload=error.formatted)
                    )
                    return
                await self.send_data_message(result, operation_id)
                is_first_result = False
            await self.send_message(CompleteMessage(type="complete", id=operation_id))
        except asyncio.CancelledError:
            await self.send_message(CompleteMessage(type="complete", id=operation_id))
        finally:
            self.subscriptions.pop(operation_id, None)
            self.tasks.pop(operation_id, None)
