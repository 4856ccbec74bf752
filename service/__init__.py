"""sfa: Spring Festival alignment as a streaming service.

The original system's API names (SPEC 8) are importable from here. They load lazily so
that `import service.engine` stays free of Dask, Kafka, streamz and Prometheus.
"""

from __future__ import annotations

import signal as _signal
import sys as _sys
from contextlib import suppress as _suppress
from typing import Any

__version__ = "0.1.0"

# A process multiprocessing spawned (a LocalCluster's Dask worker, the decode pool, the
# file reader) imports this package before anything else it does: spawn re-runs the
# `sfa` script, whose first import is us. A terminal's Ctrl-C reaches it as well, and
# left to Python it prints a KeyboardInterrupt traceback from whatever import was under
# way; its parent decides what an interrupt means and stops it.
# (`orig_argv`: spawn replaces `sys.argv` with the parent's before the import.)
if "--multiprocessing-fork" in _sys.orig_argv:
    with _suppress(ValueError):  # not the main thread: not a spawned helper's start
        _signal.signal(_signal.SIGINT, _signal.SIG_IGN)

_COMPAT = {
    "AlignedDataPoint",
    "AlignedTimeSeries",
    "BatchProcessingResult",
    "ChineseCalendar",
    "DaskResourceManager",
    "ParallelProcessingConfig",
    "ParallelSpringFestivalEngine",
    "SeasonalPattern",
    "SpringFestivalAlignmentEngine",
    "SpringFestivalWindow",
    "create_dask_dataframe_from_stock_data",
    "get_processing_recommendations",
    "optimize_dask_config_for_spring_festival_analysis",
}

__all__ = ["__version__", *sorted(_COMPAT)]


def __getattr__(name: str) -> Any:
    if name in _COMPAT:
        from service import compat

        return getattr(compat, name)
    raise AttributeError(f"module 'service' has no attribute {name!r}")
