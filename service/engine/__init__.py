"""The pure engine: numpy/pandas only. No Kafka, Dask, streamz or Prometheus here.

Public surface:
- `analyze_patterns(items, params) -> list[PatternResult]`: the vectorised heavy part
  (SPEC 3-4) over many symbols at once; what Dask workers run.
- `position_and_signal(latest_day, pattern_result, params) -> (Position, Signal | None)`:
  the cheap part (SPEC 5), recomputed on every emission.
- `window_year_of(days, window_days) -> int32 array`: the window year of each day or 0.
"""

from service.engine.pattern import analyze_patterns
from service.engine.position import phase_of, position_and_signal, position_of, signal_of
from service.engine.types import (
    ENGINE_VERSION,
    EngineParams,
    PairCache,
    Pattern,
    PatternResult,
    Position,
    Signal,
    SymbolWindows,
)
from service.engine.windows import window_year_of

__all__ = [
    "ENGINE_VERSION",
    "EngineParams",
    "PairCache",
    "Pattern",
    "PatternResult",
    "Position",
    "Signal",
    "SymbolWindows",
    "analyze_patterns",
    "phase_of",
    "position_and_signal",
    "position_of",
    "signal_of",
    "window_year_of",
]
