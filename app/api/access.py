"""Scopes for GraphQL: every operation's root fields are checked against `app.auth.scopes.GRAPHQL` before
anything runs.

The check is on the operation as a whole: if any root field it selects (through fragments too) needs a
scope the caller lacks, the operation is refused with one error and no resolver runs, so a mutation
document mixing an allowed and a refused field writes nothing. Introspection (`__schema`, `__type`,
`__typename`) needs no scope: GraphiQL and code generators can load the schema before a key is entered.

An operation sent over a WebSocket opened with an API key first checks that the key is still valid
(`Authenticator.still_valid`: read at most AUTH_KEY_CACHE_SECONDS ago, a revocation on this process at
once): a revoked or expired key's operation is refused with `UNAUTHENTICATED` and nothing runs. (An HTTP
request is authenticated afresh by `AuthMiddleware` every time.)

The error's `extensions` carry `code` (`FORBIDDEN`, or `UNAUTHENTICATED` for an anonymous caller of a
server that requires credentials) and `requiredScope`. Over HTTP the answer is 200 under
`application/json` (as every GraphQL error there) and 401 / 403 under `application/graphql-response+json`
(no `data`: nothing was executed).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
)
from pymongo.errors import PyMongoError
from starlette.websockets import WebSocket
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from app.api.context import Context
from app.auth.middleware import authenticator
from app.auth.scopes import GRAPHQL, ScopeRefusal, require
from app.domain import ErrorCode, Scope
from app.ratelimit import RateLimited, limiter

#: The root type each operation type starts from.
_ROOTS = {
    OperationType.QUERY: "Query",
    OperationType.MUTATION: "Mutation",
    OperationType.SUBSCRIPTION: "Subscription",
}


def root_fields(document: DocumentNode, operation_name: str | None) -> Iterator[str]:
    """The names of the root fields the operation `operation_name` selects, fragments followed."""
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    chosen = [o for o in operations if operation_name is None or (o.name and o.name.value == operation_name)]
    seen: set[str] = set()

    def walk(selection_set: SelectionSetNode) -> Iterator[str]:
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                yield selection.name.value
            elif isinstance(selection, InlineFragmentNode):
                yield from walk(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = fragments.get(name)
                if fragment is not None and name not in seen:  # validation refuses cycles; be safe anyway
                    seen.add(name)
                    yield from walk(fragment.selection_set)

    for operation in chosen[:1]:
        yield from walk(operation.selection_set)


#: Scopes from least to most demanding: an operation spends from the budget of its highest.
_RANK = [Scope.READ, Scope.WRITE, Scope.ADMIN]


def rate_limited(exc: RateLimited) -> GraphQLError:
    return GraphQLError(
        exc.message,
        extensions={"code": ErrorCode.RATE_LIMITED, "retryAfter": exc.retry_after, "limit": exc.limit},
    )


def refusal(exc: ScopeRefusal) -> GraphQLError:
    return GraphQLError(exc.message, extensions={"code": exc.code, "requiredScope": exc.scope.value})


class ScopeCheck(SchemaExtension):
    """Refuse an operation whose root fields need a scope the caller (`Context.principal`) lacks."""

    @staticmethod
    async def _hit(context: Context, scope: Scope) -> None:
        state = context.app
        request = context.request
        address = request.client.host if request is not None and request.client else None
        await limiter(state.extras, state.settings, state.store.db).hit(context.principal, scope, address)

    @staticmethod
    async def _revoked(context: Context) -> GraphQLError | None:
        """The refusal for an operation on a WebSocket whose API key was revoked (or expired) since the
        socket opened; None when the key is valid, or the caller is no key, or the request is HTTP."""
        principal = context.principal
        if principal.kind != "key" or not isinstance(context.request, WebSocket):
            return None
        try:
            if await authenticator(context.app).still_valid(principal):
                return None
        except PyMongoError as exc:  # answered as DATABASE_UNAVAILABLE / DATABASE_TIMEOUT (masking)
            return GraphQLError(str(exc), original_error=exc)
        return GraphQLError(
            f"API key {principal.id} was revoked or has expired: this connection's operations are refused"
            " (it is closed with 4403 shortly); reconnect with a valid key",
            extensions={"code": ErrorCode.UNAUTHENTICATED},
        )

    async def on_execute(self) -> AsyncIterator[None]:
        ctx = self.execution_context
        context = ctx.context
        document = ctx.graphql_document
        if isinstance(context, Context) and document is not None:
            fields = GRAPHQL[_ROOTS[ctx.operation_type]]
            needed: list[Scope] = []
            revoked = await self._revoked(context)
            if revoked is not None:
                if ctx.operation_type is OperationType.SUBSCRIPTION:
                    raise revoked
                ctx.result = ExecutionResult(data=None, errors=[revoked])
                yield
                return
            try:
                for name in dict.fromkeys(root_fields(document, ctx.operation_name)):
                    if name.startswith("__"):
                        continue
                    scope = fields.get(name)
                    if scope is not None:  # None: none needed (viewer); unknown: refused by validation
                        require(context.principal, scope, f"`{name}`")
                        needed.append(scope)
                if needed:  # one hit per operation, from the budget of its highest scope
                    await self._hit(context, max(needed, key=_RANK.index))
            except (ScopeRefusal, RateLimited) as exc:
                error = rate_limited(exc) if isinstance(exc, RateLimited) else refusal(exc)
                if ctx.operation_type is OperationType.SUBSCRIPTION:
                    raise error from None  # Strawberry answers an error raised here as the result
                # Set before execution: Strawberry then skips it and answers this.
                ctx.result = ExecutionResult(data=None, errors=[error])
        yield
