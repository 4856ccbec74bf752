"""The readable end-of-run report of `sfa replay --summary` (and `make demo`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.calendar import day_to_date
from service.engine import PatternResult, position_and_signal

if TYPE_CHECKING:
    from service.files.replay import ReplayStats
    from service.state import StateStore

__all__ = ["EXIT_INCOMPLETE", "Strongest", "render_summary", "strongest_patterns"]

#: Exit code of a command that did what it could but not everything: a file broke
#: part way (replay, produce) or a line could not be sent (produce). 1 means nothing
#: ran, 2 bad configuration (`service.__main__`).
EXIT_INCOMPLETE = 3


@dataclass(frozen=True, slots=True)
class Strongest:
    symbol: str
    result: PatternResult
    score: float
    phase: str
    signal: str
    action: str
    window_day: int | None = None


def strongest_patterns(state: StateStore, limit: int = 10) -> list[Strongest]:
    """Symbols with status ok, ranked by pattern_strength x confidence_level."""
    rows: list[Strongest] = []
    for symbol in state.symbols():
        cached = state.pattern(symbol)
        if cached is None:
            continue
        result = cached[0]
        if result.pattern is None:
            continue
        p = result.pattern
        windows = state.windows(symbol)
        position, signal = position_and_signal(windows.latest, result, state.params, windows.days)
        rows.append(
            Strongest(
                symbol=symbol,
                result=result,
                score=p.pattern_strength * p.confidence_level,
                phase=position.phase,
                signal=signal.signal if signal else "-",
                action=signal.action if signal else "-",
                window_day=position.window_day,
            )
        )
    rows.sort(key=lambda r: (-r.score, r.symbol))
    return rows[:limit]


def render_summary(stats: ReplayStats, state: StateStore, top: list[Strongest]) -> str:
    rate = stats.bars / stats.seconds if stats.seconds else 0.0
    by_status = ", ".join(f"{n:,} {status}" for status, n in stats.statuses.most_common())
    n_symbols = len(state)
    ok_symbols = sum(
        1 for s in state.symbols() if (c := state.pattern(s)) is not None and c[0].status == "ok"
    )
    lines = [
        "",
        "Spring Festival alignment: replay summary",
        "=" * 41,
        f"messages read        {stats.messages:>12,}",
        f"bars processed       {stats.bars:>12,}",
        f"throughput           {rate:>12,.0f} bars/s  ({stats.seconds:.1f} s, start-up included)",
        f"batches              {stats.batches:>12,}",
        f"results emitted      {stats.results:>12,}  ({by_status or 'none'})",
        f"pattern computations {stats.analysed:>12,}",
        f"symbols analysed     {n_symbols:>12,}",
        f"symbols with pattern {ok_symbols / n_symbols if n_symbols else 0.0:>12.1%}"
        f"  ({ok_symbols:,} of {n_symbols:,} symbols ok; the service's sfa_success_ratio "
        "counts analyses instead)",
        f"compute              {stats.compute_mode:>12}  "
        f"({len(stats.executed_by - {'local'})} Dask worker(s) did the work)",
    ]
    if stats.fallback_reason:
        lines.append(f"DASK FALLBACK        {stats.fallback_reason}")
    lines.append(f"dead letters         {sum(stats.dead_letters.values()):>12,}")
    for failure in stats.failures:
        lines.append(f"INCOMPLETE           {failure.message()}")
    for reason, count in sorted(stats.dead_letters.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"  {reason:<32} {count:>8,}")
    if top:
        as_of = day_to_date(max(state.latest(r.symbol) for r in top))
        lines += [
            "",
            f"Strongest festival patterns (as of {as_of})",
            f"{'symbol':<12} {'years':>5} {'strength':>8} {'confid.':>7} {'before%':>8} "
            f"{'after%':>8} {'peak':>5} {'trough':>6} {'today':>5}  {'phase':<14} "
            f"{'signal':<8} action",
        ]
        for r in top:
            p = r.result.pattern
            assert p is not None
            lines.append(
                f"{r.symbol:<12} {len(r.result.years):>5} {p.pattern_strength:>8.3f} "
                f"{p.confidence_level:>7.3f} {p.average_return_before:>8.2f} "
                f"{p.average_return_after:>8.2f} {p.peak_day:>5} {p.trough_day:>6} "
                f"{'-' if r.window_day is None else r.window_day:>5}  "
                f"{r.phase:<14} {r.signal:<8} {r.action}"
            )
        unit = "trading" if state.params.alignment == "trading" else "calendar"
        lines += [
            "",
            "strength, confid.: 0 to 1; before%, after%: mean move over the years, in % of "
            "the last close before the festival;",
            f"peak, trough, today (as_of): {unit} days from the festival, the curve's axis "
            "(- outside every window)",
        ]
    return "\n".join(lines)
