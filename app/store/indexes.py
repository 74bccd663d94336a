"""Creating the collections and their indexes (from `app.store.collections`), idempotently, at start-up."""

from __future__ import annotations

import contextlib
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import CollectionInvalid, OperationFailure

from app.store import collections


async def ensure_indexes(db: AsyncDatabase[dict[str, Any]]) -> None:
    """Create every collection and its secondary indexes, and drop the indexes a collection retired; safe
    to run on each start and from many processes.

    Collections are created up front because MongoDB cannot create one inside a multi-document
    transaction on 6.0 when another transaction races on it.
    """
    existing = set(await db.list_collection_names())
    for spec in collections.ALL:
        if spec.name not in existing:
            with contextlib.suppress(CollectionInvalid):  # another process created it first
                await db.create_collection(spec.name)
        if spec.retired_indexes:
            present = {info["name"] async for info in await db[spec.name].list_indexes()}
            for name in spec.retired_indexes:
                if name in present:
                    with contextlib.suppress(OperationFailure):  # another process dropped it first
                        await db[spec.name].drop_index(name)
        for index in spec.indexes:
            options: dict[str, Any] = (
                {}
                if index.expire_after_seconds is None
                else {"expireAfterSeconds": index.expire_after_seconds}
            )
            if index.partial_filter is not None:
                options["partialFilterExpression"] = index.partial_filter
            await db[spec.name].create_index(
                list(index.keys), name=index.name, unique=index.unique, **options
            )
