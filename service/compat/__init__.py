"""The original system's Python API (SPEC 8) on top of the service's engine.

- `alignment`: `SpringFestivalAlignmentEngine`, one stock at a time (SPEC 3-5).
- `parallel`: `ParallelSpringFestivalEngine` (its subclass) and the batch result.
- `types`: windows, aligned points and series, `SeasonalPattern`.
- `calendar`: `ChineseCalendar` over the service's festival dates, 1901-2100.
- `config`: `ParallelProcessingConfig`, the DASK_* knobs.
- `cluster`: `DaskResourceManager` and the module-level Dask helpers.
- `frames`: how a user's frame becomes bars, the same for every door.
- `recommend`: `get_processing_recommendations`, a measured cost model.
"""

from service.compat.alignment import SpringFestivalAlignmentEngine
from service.compat.calendar import ChineseCalendar
from service.compat.cluster import (
    DaskResourceManager,
    create_dask_dataframe_from_stock_data,
    optimize_dask_config_for_spring_festival_analysis,
)
from service.compat.config import ParallelProcessingConfig
from service.compat.frames import frame_to_windows
from service.compat.parallel import BatchProcessingResult, ParallelSpringFestivalEngine
from service.compat.recommend import get_processing_recommendations
from service.compat.types import (
    AlignedDataPoint,
    AlignedTimeSeries,
    SeasonalPattern,
    SpringFestivalWindow,
)

__all__ = [
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
    "frame_to_windows",
    "get_processing_recommendations",
    "optimize_dask_config_for_spring_festival_analysis",
]
