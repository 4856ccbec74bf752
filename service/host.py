"""What this host offers: how many cores this process may use.

The Dask worker count, the decoder helpers and the compat cost model all size
themselves by it. How helper processes start and live is `service.helpers`.
"""

from __future__ import annotations

import os

__all__ = ["usable_cores"]


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which a container limits)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
