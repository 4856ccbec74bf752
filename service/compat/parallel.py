"""The original system's batch API (SPEC 8): same names and defaults, new insides.

Frames become `SymbolWindows` (only window bars travel); chunks of `chunk_size` symbols
are scattered to real Dask workers running `service.compute.tasks.analyze_chunk`; every
fallback (remote -> local cluster -> threads -> sequential) is logged and recorded in the
result, because the original silently reran everything sequentially when its Dask path
broke. `ParallelSpringFestivalEngine` extends `SpringFestivalAlignmentEngine`, as in the
original, and both end in the same `analyze_patterns` call.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import psutil

from service.compat.alignment import SpringFestivalAlignmentEngine
from service.compat.cluster import DaskResourceManager
from service.compat.config import ParallelProcessingConfig
from service.compat.frames import clean_bars, failure_reason, frame_to_windows
from service.compat.recommend import get_processing_recommendations
from service.compat.types import Alignment, SeasonalPattern
from service.compute.sync import SyncCompute
from service.engine import SymbolWindows, window_year_of

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

_MB = 1024 * 1024


@dataclass
class BatchProcessingResult:
    """Outcome of a batch; `execution_mode`/`fallback_reason` say where it really ran.

    `memory_usage` holds the original's `rss_mb`, `vms_mb` and `percent` (this process,
    at the end of the batch) next to `rss_start_mb`, `rss_end_mb` and `input_frames_mb`.
    """

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
        """Share of the input symbols with a pattern; 0.0 for an empty batch."""
        return len(self.successful_analyses) / self.total_stocks if self.total_stocks else 0.0

    @property
    def failure_rate(self) -> float:
        """1 - success_rate, as in the original: the share of the input symbols without a
        pattern (short history, bad frame), and 1.0 for an empty batch."""
        return 1.0 - self.success_rate


def _rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / _MB


def _memory_now() -> dict[str, float]:
    """The original's keys: this process's resident and virtual size (MB) and its share
    of the machine's memory (percent)."""
    process = psutil.Process()
    info = process.memory_info()
    return {
        "rss_mb": float(info.rss) / _MB,
        "vms_mb": float(info.vms) / _MB,
        "percent": float(process.memory_percent()),
    }


def _pairs(source: Any) -> Iterator[tuple[str, Any]]:
    """(symbol, frame) pairs from a dict, an iterable of dicts or of pairs, or a callable."""
    if callable(source) and not isinstance(source, Mapping):
        source = source()
    if isinstance(source, Mapping):
        yield from source.items()
        return
    for item in source:
        yield from item.items() if isinstance(item, Mapping) else [tuple(item)]


class ParallelSpringFestivalEngine(SpringFestivalAlignmentEngine):
    """Batch analyses over many symbols' frames (SPEC 3-4 via `service.engine`).

    `resource_manager` is the original's attribute: while it is open (`with
    engine.resource_manager:` or `start_cluster()`), every batch call runs on its session
    instead of opening one of its own.
    """

    def __init__(
        self,
        window_days: int | None = 60,
        config: ParallelProcessingConfig | None = None,
        *,
        alignment: Alignment = "trading",
        min_years: int | None = None,
    ) -> None:
        """Without `config`, the DASK_* environment (`ParallelProcessingConfig.
        from_settings()`), as the original read it; `window_days` and `min_years` as for
        `SpringFestivalAlignmentEngine`."""
        super().__init__(window_days, alignment=alignment, min_years=min_years)
        self.config = config if config is not None else ParallelProcessingConfig.from_settings()
        self.resource_manager = DaskResourceManager(self.config)

    def analyze_multiple_stocks_parallel(
        self, stock_data_dict: Mapping[str, pd.DataFrame], years: Iterable[int] | None = None
    ) -> BatchProcessingResult:
        """Analyse every symbol's frame of `stock_data_dict` (symbol -> DataFrame) at once.

        Frames may use the original column names (`trade_date`, `close_price`, ...) or the
        service's (`date`, `close`, ...). `years` keeps only those festival years. A symbol
        whose status is not `ok` lands in `failed_analyses` with a readable reason, so one
        short history never fails the batch.
        """
        return self._run([stock_data_dict], years)

    def analyze_large_dataset_streaming(
        self, data_source: Any, batch_size: int = 1000, years: Iterable[int] | None = None
    ) -> BatchProcessingResult:
        """Like `analyze_multiple_stocks_parallel` over a source too big to hold.

        `data_source` yields `(symbol, frame)` pairs: a dict, an iterable of dicts or of
        pairs, or a callable returning one of those (a generator function reading a
        database, say). Frames are taken `batch_size` at a time, all on one Dask session (a
        cluster start per batch would dominate), and the results are merged into one.
        """
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
        reuse = self.resource_manager.compute is not None
        manager = self.resource_manager if reuse else DaskResourceManager(self.config)
        with contextlib.nullcontext(manager) if reuse else manager:
            compute: SyncCompute | None = manager.compute
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
                            failed[result.symbol] = failure_reason(result, params)
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
                **_memory_now(),
            },
            execution_mode=mode,
            fallback_reason=reason,
            executed_by=frozenset(executed_by),
        )

    def optimize_for_memory_usage(
        self, stock_data_dict: Mapping[str, pd.DataFrame], max_memory_gb: float = 4.0
    ) -> dict[str, pd.DataFrame]:
        """Copies that give exactly the same analysis, under the caller's column names.

        Rows: the valid, de-duplicated window bars plus the latest bar (it closes
        windows), in date order. Columns: the date (parsed; an index stays the index),
        the close (float64: float32 would change the results), and the stock code and
        volume when present; open/high/low only validated rows and are dropped. Frames
        without a valid bar pass through (the analysis says why).
        """
        out: dict[str, pd.DataFrame] = {}
        total = 0
        for symbol, frame in stock_data_dict.items():
            cleaned = clean_bars(frame)
            if isinstance(cleaned, str):
                out[symbol] = frame
                continue
            keep = window_year_of(cleaned.days, self.window_days) != 0
            keep[-1] = True
            dates = pd.DatetimeIndex(
                cleaned.days[keep].astype("datetime64[D]").astype("datetime64[ns]")
            )
            values: dict[str, Any] = {cleaned.close_column: cleaned.closes[keep]}
            if cleaned.date_column is not None:
                values[cleaned.date_column] = dates
            rows = cleaned.rows[keep]
            for name in ("symbol", "stock_code", "volume"):
                if name in frame.columns:
                    col = frame[name].iloc[rows].to_numpy()
                    values[name] = pd.Categorical(col) if name != "volume" else col
            order = [c for c in frame.columns if c in values]
            index = dates.rename(frame.index.name) if cleaned.date_column is None else None
            slim = pd.DataFrame({c: values[c] for c in order}, index=index)
            total += int(slim.memory_usage(deep=True).sum())
            out[symbol] = slim
        if total > max_memory_gb * 1024**3:
            need = f"{total / 1024**3:.2f} GB > {max_memory_gb:.2f} GB"
            log.warning("optimised frames still need %s; use analyze_large_dataset_streaming", need)
        return out

    def get_processing_recommendations(
        self, total_stocks: int, avg_data_points_per_stock: int = 2000
    ) -> dict[str, Any]:
        """Sizing advice for a batch of `total_stocks` symbols; see the module function."""
        return get_processing_recommendations(total_stocks, avg_data_points_per_stock)
