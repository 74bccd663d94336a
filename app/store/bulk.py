"""Loading prepared documents in bulk (the demo workflow, synthetic trees for tests and benchmarks)."""

from __future__ import annotations

from collections.abc import Mapping

from pymongo import ReplaceOne, UpdateOne

from app.store.types import Db, Doc


async def upsert_by_id(db: Db, docs: Mapping[str, list[Doc]], *, overwrite: bool = True) -> None:
    """Upsert the documents by `_id`, collection by collection (`overwrite=False`: only the missing ones)."""
    for name, items in docs.items():
        if items:
            ops = [
                ReplaceOne({"_id": d["_id"]}, d, upsert=True)
                if overwrite
                else UpdateOne({"_id": d["_id"]}, {"$setOnInsert": d}, upsert=True)
                for d in items
            ]
            await db[name].bulk_write(ops, ordered=False)
