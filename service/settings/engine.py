"""The engine part: the window around each Spring Festival and what a pattern needs.
The engine itself never sees it: it gets `EngineParams` (plain numbers) from
`engine_params`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import field_validator, model_validator
from pydantic_settings import NoDecode

from service.calendar import FIRST_YEAR, LAST_BAR_YEAR
from service.engine.types import EngineParams
from service.settings.fields import Part, env

__all__ = ["EngineSettings"]


class EngineSettings(Part):
    """Windows, years and alignment of the analysis (SPEC 3-5)."""

    window_days: int = env(
        "SFA_WINDOW_DAYS", 60, "Days on each side of the Spring Festival.", ge=1, le=175
    )
    min_years: int = env(
        "SFA_MIN_YEARS",
        3,
        "Years with enough bars a pattern needs; fewer: insufficient_history.",
        ge=1,
        le=199,
    )
    min_bars_per_year: int = env(
        "SFA_MIN_BARS_PER_YEAR", 10, "Bars a year's window needs to count.", ge=2, le=351
    )
    alignment: Literal["trading", "calendar"] = env(
        "SFA_ALIGNMENT", "trading", "Count window days as trading days or calendar days."
    )
    # NoDecode: the variable is a comma-separated list, not the JSON pydantic-settings
    # expects for a collection.
    years: Annotated[frozenset[int] | None, NoDecode] = env(
        "SFA_YEARS",
        None,
        f"Comma-separated years ({FIRST_YEAR}..{LAST_BAR_YEAR}) the pattern uses; "
        "unset: every year.",
        allowed="comma-separated years 1901..2099",
    )

    @field_validator("years", mode="before")
    @classmethod
    def _parse_years(cls, value: Any) -> Any:
        if value is None or isinstance(value, frozenset | set | list | tuple):
            return value
        text = str(value).strip()
        if not text:
            return None
        try:
            years = frozenset(int(part) for part in text.split(",") if part.strip())
        except ValueError:
            raise ValueError("expected comma-separated years such as 2019,2020,2021") from None
        if any(not FIRST_YEAR <= y <= LAST_BAR_YEAR for y in years):
            raise ValueError(f"years must lie in {FIRST_YEAR}..{LAST_BAR_YEAR}")
        return years

    @field_validator("alignment", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _enough_years(self) -> EngineSettings:
        """A filter with fewer years than SFA_MIN_YEARS makes every result
        insufficient_history, silently; that is never what was meant."""
        if self.years is not None and len(self.years) < self.min_years:
            raise ValueError(
                f"SFA_YEARS: {len(self.years)} year(s), fewer than SFA_MIN_YEARS "
                f"({self.min_years}), so no symbol could ever have a pattern; name more years "
                "or lower SFA_MIN_YEARS"
            )
        return self

    def engine_params(self) -> EngineParams:
        return EngineParams(
            window_days=self.window_days,
            min_years=self.min_years,
            min_bars_per_year=self.min_bars_per_year,
            alignment=self.alignment,
            years=self.years,
        )
