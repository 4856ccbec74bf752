"""The original system's Python API (SPEC 8) on top of the service's engine.

- `parallel`: `ParallelSpringFestivalEngine` and its config, result and pattern types.
- `recommend`: `get_processing_recommendations`, a measured cost model.
"""

from service.compat.parallel import (
    BatchProcessingResult,
    DaskResourceManager,
    ParallelProcessingConfig,
    ParallelSpringFestivalEngine,
    SeasonalPattern,
    frame_to_windows,
)
from service.compat.recommend import get_processing_recommendations

__all__ = [
    "BatchProcessingResult",
    "DaskResourceManager",
    "ParallelProcessingConfig",
    "ParallelSpringFestivalEngine",
    "SeasonalPattern",
    "frame_to_windows",
    "get_processing_recommendations",
]
