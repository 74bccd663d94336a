"""Agent analytics (seed 001 "Analytics & Metrics") computed by MongoDB, one `aggregate` per call.

No GraphQL here: pure pipeline builders (`agent_stats_pipeline`, `agents_stats_pipeline`), the function
that turns one aggregation answer into an `AgentStatsData` (`stats_from_facets`), and the two functions
that run them (`agent_stats`, `agents_stats`).

One agent's numbers come from a single `$facet` over that agent's states (counts by status and by
priority, execution-time and retry statistics, the top errors, the oldest pending and failed tasks). The
list over all agents is still one `aggregate`: `$group` by `agent_name` (sorted, limited to `first`),
then a `$lookup` into the same collection whose sub-pipeline is that very `$facet`, so both fields compute
exactly the same numbers. A `$facet` over every agent at once would put every agent's task lists in one
result document (16 MB cap) and could not stop after `first` agents; the `$lookup` does neither.

Statuses are read as the API reads them (`app.lifecycle.expiry.present`): an active task past its
`expires_at` counts as failed (with the sweeper's "task expired at …" error) before the sweeper has
written it, and documents written by other programs in the seeds' shape — "In Progress", ISO-string
timestamps, string attempts, missing priority — are normalised inside the pipeline the same way
`domain.normalise_status` and the readers do.

p95 is the nearest-rank percentile: the completed tasks' execution times sorted ascending, the element
at 1-based rank ceil(0.95 × n). MongoDB 6.0 has no `$percentile` (it arrived in 7.0), so the times are
`$push`ed in one `$group`, sorted with `$sortArray` and picked with `$arrayElemAt`; the rank is computed
as ceil(95 × n / 100), which is exact in floating point (0.95 × n is not always).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from app import domain
from app.domain import Status
from app.store.collections import AGENT_TASK_STATES

Doc = dict[str, Any]
Pipeline = list[Doc]

PRIORITIES = domain.PRIORITIES
#: How many most frequent error messages are reported.
TOP_ERRORS = 5
#: Rank of the percentile reported as `p95`, in percent.
PERCENTILE = 95
#: Where the normalised fields live while the pipeline runs; removed from the documents it returns.
NORM = "_analytics"


@dataclass(frozen=True)
class AgentStatsData:
    """One agent's numbers. Counts are 0 and statistics None when the agent has no (finished) task."""

    agent_name: str
    total: int = 0
    #: Every status of `domain.STATUSES`, in that order, with its count (0 included).
    by_status: dict[str, int] = field(default_factory=lambda: dict.fromkeys(domain.STATUSES, 0))
    #: Every priority of `PRIORITIES`, in that order, with its count (0 included).
    by_priority: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PRIORITIES, 0))
    average_execution_time_seconds: float | None = None
    p95_execution_time_seconds: float | None = None
    success_rate: float | None = None
    tasks_retried: int = 0
    average_attempts_per_task: float | None = None
    max_attempts: int | None = None
    #: (message, count), most frequent first, ties by message; at most `TOP_ERRORS`.
    top_errors: list[tuple[str, int]] = field(default_factory=list)
    #: The stored state documents, oldest first (created_at, then id).
    pending: list[Doc] = field(default_factory=list)
    failed: list[Doc] = field(default_factory=list)


# ---------------------------------------------------------------------------------- normalising fields


def _to_date(path: str) -> Doc:
    """A BSON date from a date or an ISO-8601 string (naive = UTC); null for anything unreadable."""
    return {"$convert": {"input": path, "to": "date", "onError": None, "onNull": None}}


def _status_expr() -> Doc:
    """`domain.normalise_status` as an expression, generated from the same tables (`STATUS_SEPARATORS`,
    `BLANK_STATUS`, `STATUS_ALIASES`): lower case, separators → "_", blank → pending, aliases."""
    text: Doc = {
        "$toLower": {
            "$trim": {
                "input": {"$convert": {"input": "$status", "to": "string", "onError": "", "onNull": ""}}
            }
        }
    }
    for old in domain.STATUS_SEPARATORS:
        text = {"$replaceAll": {"input": text, "find": old, "replacement": "_"}}
    for _ in range(3):  # collapses runs of up to 8 underscores, far more than any real spelling has
        text = {"$replaceAll": {"input": text, "find": "__", "replacement": "_"}}
    blank = {"case": {"$eq": ["$$s", ""]}, "then": domain.BLANK_STATUS.value}
    aliases = [
        {"case": {"$eq": ["$$s", alias]}, "then": status.value}
        for alias, status in domain.STATUS_ALIASES.items()
    ]
    return {
        "$let": {"vars": {"s": text}, "in": {"$switch": {"branches": [blank, *aliases], "default": "$$s"}}}
    }


def _priority_expr() -> Doc:
    """The stored priority in lower case; missing or unknown reads as medium (the default)."""
    text = {"$toLower": {"$convert": {"input": "$priority", "to": "string", "onError": "", "onNull": ""}}}
    return {
        "$let": {
            "vars": {"p": {"$replaceAll": {"input": text, "find": " ", "replacement": "_"}}},
            "in": {"$cond": [{"$in": ["$$p", list(PRIORITIES)]}, "$$p", domain.DEFAULT_PRIORITY]},
        }
    }


def _attempts_expr() -> Doc:
    """`attempts` as the state machine reads it: a number (truncated) or a numeric string, else 0."""
    value = {
        "$cond": [{"$eq": [{"$type": "$attempts"}, "string"]}, {"$trim": {"input": "$attempts"}}, "$attempts"]
    }
    as_long = {"$convert": {"input": value, "to": "long", "onError": 0, "onNull": 0}}
    # $convert turns true into 1; the state machine reads a boolean as "no attempts".
    return {"$cond": [{"$eq": [{"$type": "$attempts"}, "bool"]}, 0, {"$max": [0, as_long]}]}


def _execution_time_expr() -> Doc:
    """A non-negative numeric `execution_time_seconds` as a double, else null."""
    t = "$execution_time_seconds"
    return {"$cond": [{"$and": [{"$isNumber": t}, {"$gte": [t, 0]}]}, {"$toDouble": t}, None]}


def _error_expr() -> Doc:
    """`last_error.message` when it is a non-empty string, else null."""
    m = "$last_error.message"
    return {"$cond": [{"$and": [{"$eq": [{"$type": m}, "string"]}, {"$ne": [m, ""]}]}, m, None]}


def _expired_message_expr(expires: str) -> Doc:
    """The message `state_machine.expire` writes: f"task expired at {expires_at.isoformat()}" (UTC)."""
    seconds = {"$dateToString": {"date": expires, "format": "%Y-%m-%dT%H:%M:%S"}}
    # isoformat() prints microseconds only when there are any; a BSON date holds milliseconds.
    fraction = {
        "$cond": [
            {"$eq": [{"$millisecond": expires}, 0]},
            "",
            {"$concat": [".", {"$dateToString": {"date": expires, "format": "%L"}}, "000"]},
        ]
    }
    return {"$concat": ["task expired at ", seconds, fraction, "+00:00"]}


def normalise_stages(now: dt.datetime) -> Pipeline:
    """Add `NORM` = {status, priority, created, attempts, time, error}, read as the API shows them at `now`.

    An active task whose `expires_at` <= `now` reads as failed with the expiry error (see `present`).
    """
    raw = {
        "status": _status_expr(),
        "priority": _priority_expr(),
        "created": _to_date("$created_at"),
        "expires": _to_date("$expires_at"),
        "attempts": _attempts_expr(),
        "time": _execution_time_expr(),
        "error": _error_expr(),
    }
    n = f"${NORM}"
    expired = {
        "$and": [
            {"$in": [f"{n}.status", sorted(domain.ACTIVE)]},
            {"$ne": [f"{n}.expires", None]},
            {"$lte": [f"{n}.expires", now]},
        ]
    }
    return [
        {"$set": {NORM: raw}},
        {
            "$set": {
                f"{NORM}.status": {"$cond": [expired, Status.FAILED, f"{n}.status"]},
                f"{NORM}.error": {"$cond": [expired, _expired_message_expr(f"{n}.expires"), f"{n}.error"]},
            }
        },
    ]


# ---------------------------------------------------------------------------------- pipelines


def scope_stages(match: Mapping[str, Any], since: dt.datetime | None) -> Pipeline:
    """`$match` the states of `match` created at or after `since`, on the indexes.

    The first `$match` is what the index (agent_name, created_at) serves; it also lets ISO-string
    `created_at`s (written by other programs) through, which the second one then compares as timestamps.
    """
    if since is None:
        return [{"$match": dict(match)}]
    return [
        {"$match": {**match, "$or": [{"created_at": {"$gte": since}}, {"created_at": {"$type": "string"}}]}},
        {"$match": {"$expr": {"$gte": [_to_date("$created_at"), since]}}},
    ]


def _oldest(status: str, first: int) -> Pipeline:
    n = f"{NORM}"
    return [
        {"$match": {f"{n}.status": status}},
        {"$sort": {f"{n}.created": 1, "_id": 1}},
        {"$limit": max(first, 1)},  # $limit must be positive; 0 is honoured when the answer is read
        {"$unset": NORM},
    ]


def facet_stages(now: dt.datetime, pending_first: int, failed_first: int) -> Pipeline:
    """The stages that turn one agent's states into one document of facets (read by `stats_from_facets`)."""
    n = f"${NORM}"
    completed_time = {"$cond": [{"$eq": [f"{n}.status", Status.COMPLETED]}, f"{n}.time", None]}
    sorted_times = {"$sortArray": {"input": "$times", "sortBy": 1}}
    rank = {"$ceil": {"$divide": [{"$multiply": [PERCENTILE, {"$size": "$times"}]}, 100]}}
    return [
        *normalise_stages(now),
        {
            "$facet": {
                "by_status": [{"$group": {"_id": f"{n}.status", "count": {"$sum": 1}}}],
                "by_priority": [{"$group": {"_id": f"{n}.priority", "count": {"$sum": 1}}}],
                "summary": [
                    {
                        "$group": {
                            "_id": None,
                            "total": {"$sum": 1},
                            "retried": {"$sum": {"$cond": [{"$gt": [f"{n}.attempts", 1]}, 1, 0]}},
                            "average_attempts": {"$avg": f"{n}.attempts"},
                            "max_attempts": {"$max": f"{n}.attempts"},
                            # $avg skips nulls; $push of $$REMOVE pushes nothing: both see completed only.
                            "average_time": {"$avg": completed_time},
                            "times": {
                                "$push": {
                                    "$cond": [{"$eq": [completed_time, None]}, "$$REMOVE", completed_time]
                                }
                            },
                        }
                    },
                    {
                        "$set": {
                            "p95_time": {
                                "$cond": [
                                    {"$eq": [{"$size": "$times"}, 0]},
                                    None,
                                    {"$arrayElemAt": [sorted_times, {"$subtract": [{"$toInt": rank}, 1]}]},
                                ]
                            }
                        }
                    },
                    {"$unset": "times"},
                ],
                "top_errors": [
                    {"$match": {f"{NORM}.error": {"$type": "string"}}},
                    {"$group": {"_id": f"{n}.error", "count": {"$sum": 1}}},
                    {"$sort": {"count": -1, "_id": 1}},
                    {"$limit": TOP_ERRORS},
                ],
                Status.PENDING: _oldest(Status.PENDING, pending_first),
                Status.FAILED: _oldest(Status.FAILED, failed_first),
            }
        },
    ]


def agent_stats_pipeline(
    agent_name: str,
    *,
    since: dt.datetime | None,
    now: dt.datetime,
    pending_first: int,
    failed_first: int,
) -> Pipeline:
    """One agent's statistics: a single result document of facets."""
    return [
        *scope_stages({"agent_name": agent_name}, since),
        *facet_stages(now, pending_first, failed_first),
    ]


def agents_stats_pipeline(
    *,
    since: dt.datetime | None,
    now: dt.datetime,
    first: int,
    pending_first: int,
    failed_first: int,
) -> Pipeline:
    """The first `first` agents by name, one result document each: {_id: agent name, stats: [facets]}.

    Tasks with no agent name (null or "") belong to no agent and are left out.
    """
    named = {"agent_name": {"$type": "string", "$ne": ""}}
    return [
        *scope_stages(named, since),
        {"$group": {"_id": "$agent_name"}},
        {"$sort": {"_id": 1}},
        {"$limit": max(first, 1)},
        {
            "$lookup": {
                "from": AGENT_TASK_STATES.name,
                "localField": "_id",
                "foreignField": "agent_name",
                "pipeline": [*scope_stages({}, since), *facet_stages(now, pending_first, failed_first)],
                "as": "stats",
            }
        },
    ]


# ---------------------------------------------------------------------------------- reading the answer


def stats_from_facets(
    agent_name: str, facets: Mapping[str, Any] | None, pending_first: int, failed_first: int
) -> AgentStatsData:
    """An `AgentStatsData` from the `$facet` document (None or empty facets: an agent with no tasks)."""
    facets = facets or {}
    summary = (facets.get("summary") or [{}])[0]
    by_status = dict.fromkeys(domain.STATUSES, 0)
    for row in facets.get("by_status") or []:
        if row["_id"] in by_status:  # an unknown status has no enum value: counted in `total` only
            by_status[row["_id"]] = row["count"]
    by_priority = dict.fromkeys(PRIORITIES, 0)
    for row in facets.get("by_priority") or []:
        by_priority[row["_id"]] = row["count"]
    finished = by_status[Status.COMPLETED] + by_status[Status.FAILED]
    max_attempts = summary.get("max_attempts")
    return AgentStatsData(
        agent_name=agent_name,
        total=summary.get("total", 0),
        by_status=by_status,
        by_priority=by_priority,
        average_execution_time_seconds=summary.get("average_time"),
        p95_execution_time_seconds=summary.get("p95_time"),
        success_rate=by_status[Status.COMPLETED] / finished if finished else None,
        tasks_retried=summary.get("retried", 0),
        average_attempts_per_task=summary.get("average_attempts"),
        max_attempts=None if max_attempts is None else int(max_attempts),
        top_errors=[(row["_id"], row["count"]) for row in facets.get("top_errors") or []],
        pending=list(facets.get(Status.PENDING) or [])[:pending_first],
        failed=list(facets.get(Status.FAILED) or [])[:failed_first],
    )


async def agent_stats(
    db: AsyncDatabase[Doc],
    agent_name: str,
    *,
    since: dt.datetime | None = None,
    now: dt.datetime,
    pending_first: int = 20,
    failed_first: int = 20,
) -> AgentStatsData:
    """One agent's statistics, in one `aggregate`; an unknown agent gets zeros and nulls."""
    pipeline = agent_stats_pipeline(
        agent_name, since=since, now=now, pending_first=pending_first, failed_first=failed_first
    )
    docs = await (await db[AGENT_TASK_STATES.name].aggregate(pipeline)).to_list()
    return stats_from_facets(agent_name, docs[0] if docs else None, pending_first, failed_first)


async def agents_stats(
    db: AsyncDatabase[Doc],
    *,
    since: dt.datetime | None = None,
    now: dt.datetime,
    first: int = 20,
    pending_first: int = 20,
    failed_first: int = 20,
) -> list[AgentStatsData]:
    """The statistics of the first `first` agents by name, in one `aggregate`."""
    if first == 0:
        return []
    pipeline = agents_stats_pipeline(
        since=since, now=now, first=first, pending_first=pending_first, failed_first=failed_first
    )
    docs = await (await db[AGENT_TASK_STATES.name].aggregate(pipeline)).to_list()
    return [
        stats_from_facets(doc["_id"], (doc.get("stats") or [None])[0], pending_first, failed_first)
        for doc in docs
    ]


__all__ = [
    "AgentStatsData",
    "agent_stats",
    "agent_stats_pipeline",
    "agents_stats",
    "agents_stats_pipeline",
    "stats_from_facets",
]
