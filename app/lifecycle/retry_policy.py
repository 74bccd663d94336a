"""Retry policies (Temporal's activity model): pure functions, no I/O, no clock.

A task's `retry_policy` (in its state) names any of `initial_interval`, `backoff_coefficient`,
`maximum_interval` (seconds), `maximum_attempts` (0 = unlimited; the state's `max_attempts` is its alias),
`non_retryable_error_types` and `jitter`; the fields it leaves out come from the server's default
(`RETRY_*` settings). After failed attempt n (n = 1, 2, ...) the next one waits

    delay = min(initial_interval * backoff_coefficient ** (n - 1), maximum_interval)

(`maximum_interval` 0 means 100 x `initial_interval`), then jitter spreads it uniformly over
delay * (1 +- jitter). A worker's `next_retry_delay` replaces the computed delay (no jitter, no cap).
The failure event records the computed delay before jitter, the delay applied, and `next_attempt_at`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from typing import Any

#: The fields of a retry policy, in the order the API lists them.
FIELDS = (
    "initial_interval",
    "backoff_coefficient",
    "maximum_interval",
    "maximum_attempts",
    "non_retryable_error_types",
    "jitter",
)
#: Most error types a policy may list, and the longest one.
MAX_ERROR_TYPES = 100
MAX_ERROR_TYPE_LENGTH = 200
#: The longest interval a policy (or a worker's next_retry_delay) may ask for: one year, in seconds.
MAX_INTERVAL_SECONDS = 365 * 24 * 3600.0


class PolicyError(ValueError):
    """A policy field is out of range; `field` names it (relative to the policy)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check(policy: Mapping[str, Any]) -> dict[str, Any]:
    """The policy's given fields (None = not given), validated; raises `PolicyError`."""
    out: dict[str, Any] = {}
    for name in FIELDS:
        value = policy.get(name)
        if value is None:
            continue
        if name == "non_retryable_error_types":
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise PolicyError(name, "non_retryable_error_types must be a list of non-empty strings")
            if len(value) > MAX_ERROR_TYPES or any(len(v) > MAX_ERROR_TYPE_LENGTH for v in value):
                raise PolicyError(
                    name,
                    f"at most {MAX_ERROR_TYPES} error types of at most {MAX_ERROR_TYPE_LENGTH} characters",
                )
            out[name] = list(dict.fromkeys(value))
            continue
        if not _number(value):
            raise PolicyError(name, f"{name} must be a finite number, got {value!r}")
        if name == "maximum_attempts":
            if value < 0 or int(value) != value:
                raise PolicyError(name, f"maximum_attempts must be a whole number >= 0, got {value}")
            out[name] = int(value)
        elif name == "backoff_coefficient":
            if not 1 <= value <= 100:
                raise PolicyError(name, f"backoff_coefficient must be between 1 and 100, got {value}")
            out[name] = float(value)
        elif name == "jitter":
            if not 0 <= value <= 1:
                raise PolicyError(name, f"jitter must be between 0 and 1, got {value}")
            out[name] = float(value)
        else:
            if not 0 <= value <= MAX_INTERVAL_SECONDS:
                raise PolicyError(
                    name, f"{name} must be between 0 and {MAX_INTERVAL_SECONDS:g} s, got {value}"
                )
            out[name] = float(value)
    return out


def effective(policy: Any, default: Mapping[str, Any] | None) -> dict[str, Any]:
    """The task's policy over the server's default (fields the task leaves out come from the default).

    A malformed stored policy (a foreign document) counts as not set."""
    base = {k: v for k, v in (default or {}).items() if v is not None}
    if isinstance(policy, Mapping):
        with contextlib.suppress(PolicyError):
            base |= check(policy)
    return base


def computed_delay(policy: Mapping[str, Any], attempt: int) -> float:
    """The delay before the attempt after failed attempt `attempt` (1-based), before jitter, in seconds."""
    initial = float(policy.get("initial_interval") or 0.0)
    if initial <= 0:
        return 0.0
    coefficient = float(policy.get("backoff_coefficient") or 2.0)
    maximum = float(policy.get("maximum_interval") or 0.0) or 100 * initial
    exponent = max(0, attempt - 1)
    # coefficient ** exponent overflows long before it matters: cap by the maximum first.
    if coefficient > 1 and exponent * math.log(coefficient) > math.log(maximum / initial):
        return maximum
    return min(initial * coefficient**exponent, maximum)


def jittered(delay: float, jitter: float, draw: float) -> float:
    """`delay` spread over delay * (1 +- jitter) by `draw` (uniform in [0, 1)); never negative."""
    return max(0.0, delay * (1 + jitter * (2 * draw - 1)))


def is_non_retryable(policy: Mapping[str, Any], error_type: str | None) -> bool:
    """Whether `error_type` is one the policy fails for good."""
    return error_type is not None and error_type in (policy.get("non_retryable_error_types") or [])
