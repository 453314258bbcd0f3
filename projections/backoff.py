"""The pause between attempts of a background loop whose store or broker keeps failing.

One formula for every such loop (relay, projector, KPI scorer, bindings follower). It lives here,
importing nothing of ours, so both `projections` and `services` can use it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Capped exponential: `first_s` after the first failure, doubling, never above `max_s`."""

    first_s: float = 0.5
    max_s: float = 30.0

    def delay_s(self, failures: int) -> float:
        return min(self.max_s, self.first_s * 2.0 ** max(0, failures - 1))
