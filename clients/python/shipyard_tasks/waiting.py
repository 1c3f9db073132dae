"""How a wait polls a task: soon at first (most tasks are short), then less and less often, up
to a ceiling; never past the deadline."""

from __future__ import annotations

import time


class PollSchedule:
    """The deadline is fixed when the schedule is made (before the first look), so the whole
    wait, the looks' own time included, stays within ``timeout``."""

    def __init__(self, timeout: float, first: float = 0.05, ceiling: float = 2.0):
        if timeout < 0:
            raise ValueError(f"timeout must be 0 or more seconds, got {timeout}")
        self.deadline = time.monotonic() + timeout
        self._delay, self._ceiling = first, ceiling

    def next_delay(self) -> float | None:
        """Seconds to sleep before the next look, or None: the time is up. The last sleep ends
        at the deadline, so the final look is made then rather than a whole interval later."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            return None
        delay = min(self._delay, remaining)
        self._delay = min(self._delay * 2, self._ceiling)
        return delay
