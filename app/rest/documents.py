"""Stored documents in the seed's JSON shape, and the JSON response that writes them.

A document leaves MongoDB with its seed id in `_id`; a REST answer names it by the seed's id field
(`task_id`, `sub_task_id`, …) and lists it first. Seed fields missing from a document written by another
program are filled with the seed's defaults (`""`, `[]`, `{}`, `false`, or `null` where the seed says
Optional), datetimes become ISO-8601 strings, and internal fields (`priority_rank`) are left out. An
agent task's state is shown as reads show it everywhere (`present`: an overdue task reads as failed).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse

from app.lifecycle.expiry import present
from app.store.collections import AGENT_TASK_STATES, CollectionSpec, FieldKind

#: Seed fields typed `Optional[...]` (default None); every other seed field has an empty default.
NULLABLE_SEED_FIELDS = frozenset({"prev_sub_task_id"})
_SEED_DEFAULTS: dict[FieldKind, Any] = {
    FieldKind.STRING: "",
    FieldKind.BOOL: False,
    FieldKind.STRING_LIST: [],
    FieldKind.JSON: {},
}


def seed_default(spec: CollectionSpec, field: str) -> Any:
    """The seed's default for a field of the six seed 002 entities (None where there is none)."""
    if field in NULLABLE_SEED_FIELDS:
        return None
    default = _SEED_DEFAULTS.get(spec.fields[field])
    return default.copy() if isinstance(default, list | dict) else default


def to_seed_shape(spec: CollectionSpec, doc: Mapping[str, Any]) -> dict[str, Any]:
    """The document as a REST answer shows it (see the module docstring)."""
    if spec is AGENT_TASK_STATES:
        doc = present(doc)
    hidden = spec.server_fields - spec.fields.keys()
    out: dict[str, Any] = {spec.id_field: doc["_id"]}
    out.update((k, v) for k, v in doc.items() if k not in ("_id", spec.id_field) and k not in hidden)
    if spec is not AGENT_TASK_STATES:
        for field in spec.fields:
            if field not in out:
                out[field] = seed_default(spec, field)
    return out


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)  # ObjectIds and other BSON values from foreign documents


class RestJSONResponse(JSONResponse):
    """JSON with ISO-8601 datetimes; text echoed from a request can never make rendering fail."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(
            content, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=_json_default
        )
        return text.encode("utf-8", "backslashreplace")
