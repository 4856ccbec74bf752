"""sfa: Spring Festival alignment as a streaming service.

The original system's API names (SPEC 8) are importable from here. They load lazily so
that `import service.engine` stays free of Dask, Kafka, streamz and Prometheus.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

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
