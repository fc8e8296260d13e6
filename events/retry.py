"""The one retry-backoff rule: a delay that doubles from `first_delay_s` up to `max_delay_s`, and a
delivery count at which a consumer stops asking for another try.

Counts are JetStream deliveries, 1-based: `msg.metadata.num_delivered` of the delivery that just
failed (1 on the first try). A loop that retries within one delivery counts the tries made so far in
the same way. Each caller builds its own policy with its own numbers; this module only holds the rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """After delivery n failed, wait `first_delay_s * 2**(n-1)`, at most `max_delay_s`; the delivery
    that reaches `give_up_after` is the last one (the caller records the failure instead of a nak)."""

    first_delay_s: float
    max_delay_s: float
    give_up_after: int  # deliveries

    def __post_init__(self) -> None:
        if not (math.isfinite(self.first_delay_s) and self.first_delay_s >= 0):
            raise ValueError(f"first_delay_s must be a non-negative number, not {self.first_delay_s}")
        if not (math.isfinite(self.max_delay_s) and self.max_delay_s >= self.first_delay_s):
            raise ValueError(f"max_delay_s must be at least first_delay_s, not {self.max_delay_s}")
        if self.give_up_after < 1:
            raise ValueError(f"give_up_after must be at least 1, not {self.give_up_after}")

    def delay_s(self, num_delivered: int) -> float:
        """The nak delay after delivery `num_delivered` failed: first, 2 × first, 4 × first, … capped."""
        # The exponent is bounded, so that a long crash loop never overflows a float.
        return min(self.first_delay_s * 2.0 ** min(max(num_delivered - 1, 0), 64), self.max_delay_s)

    def gives_up(self, num_delivered: int) -> bool:
        """Whether delivery `num_delivered` is the last one to be tried."""
        return num_delivered >= self.give_up_after
