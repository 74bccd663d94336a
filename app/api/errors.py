"""GraphQL errors a client caused (shown as they are) and the masking of everything else.

Bad filters, cursors and page sizes are refused with `UserInputError`, whose message says what was
wrong and whose `extensions.code` is machine-readable. Any other exception is logged and masked as
"Unexpected error." so no internals leak.
"""

from __future__ import annotations

from graphql import GraphQLError


class UserInputError(GraphQLError):
    """A request the client must change; `code` goes to `extensions.code`."""

    def __init__(self, message: str, code: str = "BAD_USER_INPUT") -> None:
        super().__init__(message, extensions={"code": code})


def page_size(first: int | None, default: int, maximum: int, name: str = "first") -> int:
    """The page size asked for (`default` when not given), refused outside 0..`maximum`; `name` is the
    argument, for the message."""
    size = default if first is None else first
    if not 0 <= size <= maximum:
        raise UserInputError(
            f"`{name}` must be between 0 and {maximum}, got {size}.", "PAGE_SIZE_OUT_OF_RANGE"
        )
    return size


def should_mask_error(error: GraphQLError) -> bool:
    """Mask exceptions raised by our code unless they are deliberate GraphQL errors (validation, input)."""
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError)
