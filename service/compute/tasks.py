"""Functions shipped to Dask workers. Module-level and plain-data only, so they pickle
by reference and never drag a live Client or pipeline into a task (the original
system's Dask path failed exactly that way and silently fell back to sequential work).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from service.engine import EngineParams, PatternResult, SymbolWindows

__all__ = ["ChunkResult", "analyze_chunk", "where_am_i"]


@dataclass(frozen=True, slots=True)
class ChunkResult:
    """A chunk's patterns plus where they were computed: proof that workers did the work."""

    results: list[PatternResult]
    executed_by: str


def where_am_i() -> str:
    """The Dask worker address running this call, or 'local' outside any worker."""
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return "local"


def analyze_chunk(items: Sequence[SymbolWindows], params: EngineParams) -> ChunkResult:
    from service.engine import analyze_patterns

    return ChunkResult(results=analyze_patterns(list(items), params), executed_by=where_am_i())
