"""The original system's Python API (SPEC 8): same names and defaults, new insides.

Frames become `SymbolWindows` (only window bars travel); chunks of `chunk_size` symbols
are scattered to real Dask workers running `service.compute.tasks.analyze_chunk`; every fallback
(remote -> local cluster -> threads -> sequential) is logged and recorded in the result,
because the original silently reran everything sequentially when its Dask path broke.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import psutil

from service.calendar import FIRST_BAR_DAY, LAST_BAR_DAY
from service.compat.recommend import get_processing_recommendations
from service.compute.config import default_n_workers
from service.compute.sync import SyncCompute, SyncMode, open_sync
from service.decode.rules import ALIASES
from service.engine import EngineParams, PatternResult, SymbolWindows, window_year_of
from service.settings import Settings, load_settings

__all__ = [
    "BatchProcessingResult",
    "DaskResourceManager",
    "ParallelProcessingConfig",
    "ParallelSpringFestivalEngine",
    "SeasonalPattern",
    "frame_to_windows",
    "get_processing_recommendations",
]

log = logging.getLogger(__name__)

Execution = Literal["auto", "remote", "local_cluster", "threads", "sequential"]
# The original column names (SPEC 8) -> SPEC 1 names: SPEC 1's alias table, reversed.
_ALIASES = {alias: canonical for canonical, alias in ALIASES.items()}
_PATTERN_FIELDS = (
    *("pattern_strength", "average_return_before", "average_return_after", "volatility_before"),
    *("volatility_after", "consistency_score", "confidence_level", "peak_day", "trough_day"),
)
_MB = 1024 * 1024
#: ParallelProcessingConfig knob -> Settings field (the DASK_* variable it comes from).
_KNOBS = {
    "n_workers": "dask_n_workers",
    "threads_per_worker": "dask_threads_per_worker",
    "memory_limit": "dask_memory_limit",
    "chunk_size": "dask_chunk_size",
    "enable_distributed": "dask_enable_distributed",
    "scheduler_address": "dask_scheduler_address",
}


@dataclass
class ParallelProcessingConfig:
    """The original knobs. `execution` is new: 'auto' follows the fallback chain from the
    knobs; another value starts the chain there (e.g. 'sequential' needs no Dask at all)."""

    n_workers: int = 4
    threads_per_worker: int = 2
    memory_limit: str = "2GB"
    chunk_size: int = 100
    enable_distributed: bool = False
    scheduler_address: str | None = None
    execution: Execution = "auto"
    settings: Settings | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("n_workers", "threads_per_worker", "chunk_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ParallelProcessingConfig:
        """Read DASK_* (and the memory/timeouts they imply) via `load_settings`."""
        s = load_settings(env)
        knobs = {knob: getattr(s, name) for knob, name in _KNOBS.items()}
        return cls(**{**knobs, "n_workers": s.dask_n_workers or default_n_workers()}, settings=s)

    def to_settings(self) -> Settings:
        """The service settings these knobs mean; fractions/timeouts from env if read there."""
        base = self.settings if self.settings is not None else load_settings({})
        update = {name: getattr(self, knob) for knob, name in _KNOBS.items()}
        return base.model_copy(
            update={**update, "dask_scheduler_address": self.scheduler_address or None}
        )


@dataclass(frozen=True)
class SeasonalPattern:
    """One symbol's SPEC 4 pattern under the original attribute names."""

    symbol: str
    years_analyzed: list[int]
    pattern_strength: float
    average_return_before: float
    average_return_after: float
    volatility_before: float
    volatility_after: float
    consistency_score: float
    confidence_level: float
    peak_day: int
    trough_day: int
    #: SPEC 6's value: None where the ratio is infinite.
    raw_volatility_ratio: float | None = None
    #: (k, mean_k, n_k) rows of SPEC 4's curve.
    curve: list[tuple[int, float, int]] = field(default_factory=list, repr=False)

    @property
    def volatility_ratio(self) -> float:
        return math.inf if self.raw_volatility_ratio is None else self.raw_volatility_ratio

    @classmethod
    def from_result(cls, result: PatternResult) -> SeasonalPattern:
        p = result.pattern
        if p is None:
            raise ValueError(f"{result.symbol}: no pattern (status {result.status})")
        ks, means, ns = result.curve_k.tolist(), result.curve_mean.tolist(), result.curve_n.tolist()
        return cls(
            symbol=result.symbol,
            years_analyzed=list(result.years),
            raw_volatility_ratio=p.volatility_ratio,
            curve=list(zip(ks, means, ns, strict=True)),
            **{name: getattr(p, name) for name in _PATTERN_FIELDS},
        )


@dataclass
class BatchProcessingResult:
    """Outcome of a batch; `execution_mode`/`fallback_reason` say where it really ran."""

    successful_analyses: dict[str, SeasonalPattern]
    failed_analyses: dict[str, str]
    processing_time: float
    total_stocks: int
    memory_usage: dict[str, float]
    execution_mode: str = "sequential"
    fallback_reason: str | None = None
    executed_by: frozenset[str] = frozenset()

    @property
    def success_rate(self) -> float:
        return len(self.successful_analyses) / self.total_stocks if self.total_stocks else 0.0

    @property
    def failure_rate(self) -> float:
        return len(self.failed_analyses) / self.total_stocks if self.total_stocks else 0.0


class DaskResourceManager:
    """`with DaskResourceManager(config) as client:` -- a Client, or None when sequential.

    `mode`, `fallback_reason` and `compute` (runs chunks on whatever was had) stay
    readable inside the block.
    """

    def __init__(self, config: ParallelProcessingConfig | None = None) -> None:
        self.config = config if config is not None else ParallelProcessingConfig()
        self.compute: SyncCompute | None = None
        self.mode: str | None = None
        self.fallback_reason: str | None = None
        self._session: Any = None

    def __enter__(self) -> Any:
        start: SyncMode | None = None if self.config.execution == "auto" else self.config.execution
        self._session = open_sync(self.config.to_settings(), start)
        self.compute = compute = self._session.__enter__()
        self.mode, self.fallback_reason = compute.mode, compute.fallback_reason
        return compute.client

    def __exit__(self, *exc_info: Any) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.__exit__(*exc_info)


def _column(frame: pd.DataFrame, name: str) -> pd.Series | None:
    """SPEC 1 name first, then the original alias; a date may also be the index."""
    if name in frame.columns:
        return frame[name]
    for alias, canonical in _ALIASES.items():
        if canonical == name and alias in frame.columns:
            return frame[alias]
    if name == "date" and (
        isinstance(frame.index, pd.DatetimeIndex) or frame.index.name in ("date", "trade_date")
    ):
        return frame.index.to_series(index=frame.index)
    return None


def _numbers(col: pd.Series) -> np.ndarray:
    return pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _valid_optional(frame: pd.DataFrame, name: str, low: float, strict: bool) -> np.ndarray:
    """Rows whose optional field is absent (null) or finite and in range (SPEC 1)."""
    col = _column(frame, name)
    if col is None:
        return np.ones(len(frame), dtype=bool)
    values = _numbers(col)
    absent = col.isna().to_numpy()
    in_range = values > low if strict else values >= low
    with np.errstate(invalid="ignore"):
        return np.asarray(absent | (np.isfinite(values) & in_range), dtype=bool)


def _clean_bars(frame: Any) -> tuple[np.ndarray, np.ndarray] | str:
    """Valid bars as (int32 day numbers ascending, float64 closes), or why there are none.

    Invalid rows are dropped as the service would reject them (SPEC 1); a later row for
    the same date wins (a correction).
    """
    if not isinstance(frame, pd.DataFrame):
        return f"expected a pandas DataFrame, got {type(frame).__name__}"
    dates, closes = _column(frame, "date"), _column(frame, "close")
    if dates is None or closes is None:
        missing = "date (or trade_date)" if dates is None else "close (or close_price)"
        return f"no {missing} column"
    stamps = pd.to_datetime(dates, errors="coerce")
    if getattr(stamps.dt, "tz", None) is not None:
        stamps = stamps.dt.tz_localize(None)
    has_date = stamps.notna().to_numpy()
    days = np.zeros(len(frame), dtype=np.int64)
    days[has_date] = stamps[has_date].to_numpy().astype("datetime64[D]").astype(np.int64)
    close = _numbers(closes)
    with np.errstate(invalid="ignore"):
        ok = has_date & (days >= FIRST_BAR_DAY) & (days <= LAST_BAR_DAY) & np.isfinite(close)
        ok &= close > 0
    for name in ("open", "high", "low", "volume"):
        ok &= _valid_optional(frame, name, 0.0, strict=name != "volume")
    high, low = _column(frame, "high"), _column(frame, "low")
    if high is not None and low is not None:
        with np.errstate(invalid="ignore"):
            ok &= ~(_numbers(low) > _numbers(high))  # NaN on either side: the rule does not apply
    if not ok.any():
        return f"no valid bars: all {len(frame)} rows lack a valid date or close (or break SPEC 1)"
    bars = pd.Series(close[ok], index=days[ok])
    bars = bars[~bars.index.duplicated(keep="last")].sort_index()
    return bars.index.to_numpy().astype(np.int32), bars.to_numpy(dtype=np.float64)


def frame_to_windows(symbol: str, frame: Any, window_days: int) -> SymbolWindows | str:
    """A user's frame -> its window bars, or a readable reason it has none. `latest` is
    taken over all valid rows, in a window or not (SPEC 3)."""
    cleaned = _clean_bars(frame)
    if isinstance(cleaned, str):
        return cleaned
    days, closes = cleaned
    keep = window_year_of(days, window_days) != 0
    return SymbolWindows(str(symbol), days[keep], closes[keep], latest=int(days[-1]))


def _failure_reason(result: PatternResult, params: EngineParams) -> str:
    n = len(result.years)
    if n < params.min_years:
        return (
            f"insufficient_history: {n} qualifying year(s) {list(result.years)}, need "
            f"{params.min_years} closed Spring Festival windows with bars on both sides and "
            f">= {params.min_bars_per_year} bars each"
        )
    return "insufficient_history: no relative day is shared by two qualifying years"


def _rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / _MB


def _pairs(source: Any) -> Iterator[tuple[str, Any]]:
    """(symbol, frame) pairs from a dict, an iterable of dicts or of pairs, or a callable."""
    if callable(source) and not isinstance(source, Mapping):
        source = source()
    if isinstance(source, Mapping):
        yield from source.items()
        return
    for item in source:
        yield from item.items() if isinstance(item, Mapping) else [tuple(item)]


class ParallelSpringFestivalEngine:
    """Batch analyses over many symbols' frames (SPEC 3-4 via `service.engine`)."""

    def __init__(
        self, window_days: int = 60, config: ParallelProcessingConfig | None = None
    ) -> None:
        if not 1 <= int(window_days) <= 175:
            raise ValueError("window_days must lie in 1..175 (SPEC 3)")
        self.window_days = int(window_days)
        self.config = config if config is not None else ParallelProcessingConfig()

    def _params(self, years: Iterable[int] | None) -> EngineParams:
        chosen = frozenset(int(y) for y in years) if years is not None else None
        return EngineParams(window_days=self.window_days, years=chosen)

    def analyze_multiple_stocks_parallel(
        self, stock_data_dict: Mapping[str, pd.DataFrame], years: Iterable[int] | None = None
    ) -> BatchProcessingResult:
        return self._run([stock_data_dict], years)

    def analyze_large_dataset_streaming(
        self, data_source: Any, batch_size: int = 1000, years: Iterable[int] | None = None
    ) -> BatchProcessingResult:
        """Like the above over a source too big to hold: `batch_size` frames at a time, one
        Dask session for all of them (a cluster start per batch would dominate)."""
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")

        pairs = _pairs(data_source)
        return self._run(iter(lambda: list(itertools.islice(pairs, batch_size)), []), years)

    def _run(self, batches: Iterable[Any], years: Iterable[int] | None) -> BatchProcessingResult:
        params = self._params(years)
        started, rss_start = time.perf_counter(), _rss_mb()
        ok: dict[str, SeasonalPattern] = {}
        failed: dict[str, str] = {}
        executed_by: set[str] = set()
        input_mb = 0.0
        manager = DaskResourceManager(self.config)
        with manager:
            compute = manager.compute
            assert compute is not None
            for batch in batches:
                pairs = list(batch.items()) if isinstance(batch, Mapping) else list(batch)
                items: list[SymbolWindows] = []
                for symbol, frame in pairs:
                    if isinstance(frame, pd.DataFrame):
                        input_mb += float(frame.memory_usage(deep=False).sum()) / _MB
                    converted = frame_to_windows(symbol, frame, self.window_days)
                    if isinstance(converted, str):
                        failed[str(symbol)] = converted
                    else:
                        items.append(converted)
                size = self.config.chunk_size
                chunks = [items[i : i + size] for i in range(0, len(items), size)]
                for chunk in compute.run_chunks(chunks, params):
                    executed_by.add(chunk.executed_by)
                    for result in chunk.results:
                        if result.status == "ok" and result.pattern is not None:
                            ok[result.symbol] = SeasonalPattern.from_result(result)
                        else:
                            failed[result.symbol] = _failure_reason(result, params)
            mode, reason = compute.mode, compute.fallback_reason
        return BatchProcessingResult(
            successful_analyses=ok,
            failed_analyses=failed,
            processing_time=time.perf_counter() - started,
            total_stocks=len(ok) + len(failed),
            memory_usage={
                "rss_start_mb": rss_start,
                "rss_end_mb": _rss_mb(),
                "input_frames_mb": input_mb,
            },
            execution_mode=mode,
            fallback_reason=reason,
            executed_by=frozenset(executed_by),
        )

    def optimize_for_memory_usage(
        self, stock_data_dict: Mapping[str, pd.DataFrame], max_memory_gb: float = 4.0
    ) -> dict[str, pd.DataFrame]:
        """Copies that give exactly the same analysis: valid, de-duplicated window bars plus
        the latest bar (it closes windows) as `date` and `close` (float64: float32 would
        change the results). Frames without a valid bar pass through (the analysis says why).
        """
        out: dict[str, pd.DataFrame] = {}
        total = 0
        for symbol, frame in stock_data_dict.items():
            cleaned = _clean_bars(frame)
            if isinstance(cleaned, str):
                out[symbol] = frame
                continue
            days, closes = cleaned
            keep = window_year_of(days, self.window_days) != 0
            keep[-1] = True
            dates = days[keep].astype("datetime64[D]").astype("datetime64[ns]")
            slim = pd.DataFrame({"date": dates, "close": closes[keep]})
            total += int(slim.memory_usage(deep=False).sum())
            out[symbol] = slim
        if total > max_memory_gb * 1024**3:
            need = f"{total / 1024**3:.2f} GB > {max_memory_gb:.2f} GB"
            log.warning("optimised frames still need %s; use analyze_large_dataset_streaming", need)
        return out

    def get_processing_recommendations(
        self, total_stocks: int, avg_data_points_per_stock: int = 2000
    ) -> dict[str, Any]:
        return get_processing_recommendations(total_stocks, avg_data_points_per_stock)
