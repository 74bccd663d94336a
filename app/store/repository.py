"""Generic reads over any collection: documents by id, by a field, and one keyset page of a filtered list.

This is the read half of the store; every hierarchy level, output and state uses the same code, driven
by its `CollectionSpec`. Documents come back as plain dicts with the seed id in `_id`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from app.store.collections import CollectionSpec
from app.store.cursors import CursorCodec, SortSpec, after_filter, cursor_payload, sort_keys
from app.store.failures import filter_time_limit
from app.store.types import Collection

Document = dict[str, Any]


@dataclass(frozen=True)
class Page:
    """One page of a list: the documents, their cursors, and what is needed to count the whole list."""

    docs: list[Document]
    cursors: list[str]
    has_next_page: bool
    has_previous_page: bool
    filter: Mapping[str, Any]


class Store:
    """The database handle plus the cursor codec; one per application, created in the lifespan."""

    def __init__(self, db: AsyncDatabase[Document], codec: CursorCodec) -> None:
        self.db = db
        self.codec = codec

    def collection(self, spec: CollectionSpec) -> Collection:
        return self.db[spec.name]

    async def find_by_ids(self, spec: CollectionSpec, ids: Iterable[Any]) -> dict[Any, Document]:
        """Documents by seed id, in one `find`; missing ids are simply absent from the answer."""
        keys = list(dict.fromkeys(ids))
        if not keys:
            return {}
        # limit = batch size = number of keys: the whole answer comes in the first batch and the server
        # closes the cursor, so there is never a getMore round trip.
        cursor = self.collection(spec).find({"_id": {"$in": keys}}, limit=len(keys), batch_size=len(keys))
        return {doc["_id"]: doc async for doc in cursor}

    async def find_by_field(self, spec: CollectionSpec, field: str, values: Sequence[Any]) -> list[Document]:
        """Documents whose `field` is one of `values`, in one `find`, ordered by `_id` for stable output."""
        keys = list(dict.fromkeys(values))
        if not keys:
            return []
        cursor = self.collection(spec).find({spec.storage_path(field): {"$in": keys}}).sort("_id", 1)
        return [doc async for doc in cursor]

    async def find_page(
        self,
        spec: CollectionSpec,
        query: Mapping[str, Any],
        sort: SortSpec,
        first: int,
        after: str | None,
        time_limit_ms: int | None = None,
    ) -> Page:
        """One page of documents matching `query` in `sort` order, after the cursor `after`.

        Keyset pagination (never skip): the cursor holds the last sort value and `_id`, so a page costs
        the same however deep the client has paged, and inserts between pages never shift results.
        One extra document is read to know whether a next page exists. With `time_limit_ms` (a query
        holding a client's filter) running longer raises `FilterTooSlow` (see `failures`).
        """
        conditions: list[Mapping[str, Any]] = [query] if query else []
        if after is not None:
            conditions.append(after_filter(sort, self.codec.decode(after)))
        mongo_filter: Mapping[str, Any] = (
            {} if not conditions else conditions[0] if len(conditions) == 1 else {"$and": conditions}
        )
        with filter_time_limit(time_limit_ms):
            cursor = (
                self.collection(spec)
                .find(mongo_filter, batch_size=first + 1)
                .sort(sort_keys(sort))
                .limit(first + 1)
            )
            docs = [doc async for doc in cursor]
        has_next = len(docs) > first
        docs = docs[:first]
        return Page(
            docs=docs,
            cursors=[self.codec.encode(cursor_payload(sort, doc)) for doc in docs],
            has_next_page=has_next,
            has_previous_page=after is not None,
            filter=query,
        )

    async def count(
        self, spec: CollectionSpec, query: Mapping[str, Any], time_limit_ms: int | None = None
    ) -> int:
        """How many documents match `query` (the whole list, not the page); `time_limit_ms` as in
        `find_page`."""
        with filter_time_limit(time_limit_ms):
            return await self.collection(spec).count_documents(dict(query))
