"""GraphQL errors a client caused (shown as they are) and the masking of everything else.

Bad filters, cursors and page sizes are refused with `UserInputError`, whose message says what was
wrong and whose `extensions.code` is machine-readable. A MongoDB failure that is the database's state
(unreachable, out of time: `app.store.failures`) becomes an error with `extensions.code`
`DATABASE_UNAVAILABLE` or `DATABASE_TIMEOUT`, logged as one WARNING line. Any other exception is logged
and masked as "Unexpected error." so no internals leak.
"""

from __future__ import annotations

import logging

from graphql import GraphQLError
from strawberry.extensions import MaskErrors

from app.domain import ErrorCode
from app.store.failures import classify, describe

logger = logging.getLogger("agent_tasks.graphql")


class UserInputError(GraphQLError):
    """A request the client must change; `code` goes to `extensions.code`."""

    def __init__(self, message: str, code: ErrorCode = ErrorCode.BAD_USER_INPUT) -> None:
        super().__init__(message, extensions={"code": code})


def page_size(first: int | None, default: int, maximum: int, name: str = "first") -> int:
    """The page size asked for (`default` when not given), refused outside 0..`maximum`; `name` is the
    argument, for the message."""
    size = default if first is None else first
    if not 0 <= size <= maximum:
        raise UserInputError(
            f"`{name}` must be between 0 and {maximum}, got {size}.", ErrorCode.PAGE_SIZE_OUT_OF_RANGE
        )
    return size


def should_mask_error(error: GraphQLError) -> bool:
    """Mask exceptions raised by our code unless they are deliberate GraphQL errors (validation, input)."""
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError)


def database_error(error: GraphQLError) -> GraphQLError | None:
    """The client's error for a resolver that failed on the database's state, or None for anything else."""
    failure = None if error.original_error is None else classify(error.original_error)
    if failure is None:
        return None
    return GraphQLError(
        failure.message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions={"code": failure.code},
    )


class MaskUnexpectedErrors(MaskErrors):
    """Strawberry's masking, except that database failures keep a clear message and their code."""

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        return database_error(error) or super().anonymise_error(error)


def log_database_error(error: GraphQLError) -> bool:
    """Log a database failure as one WARNING line (no traceback: it is no bug); whether it was one."""
    replaced = database_error(error)
    if replaced is None:
        return False
    path = ".".join(map(str, error.path or ())) or "-"
    code = (replaced.extensions or {}).get("code")
    logger.warning("%s at %s: %s", code, path, describe(error.original_error or error))
    return True
