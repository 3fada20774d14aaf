"""Economics: what each deployment costs per month, where self-hosting breaks even, and which to pick.

    >>> from tiergate.economics import load_workload, make_plan, resolve_closed_price
    >>> from tiergate.accounting.prices import load_price_table

See ``docs/tco.md`` for the method and ``examples/workload.yaml`` for the input.
"""

from tiergate.economics.advice import Advice, Assumptions, BreakEven, Burden, ByOption, Option, make_plan, recommend
from tiergate.economics.share import ShareSource, load_scores, share_from_rows, share_from_scores
from tiergate.economics.tco import (
    DAYS_PER_MONTH,
    HOURS_PER_MONTH,
    ClosedTier,
    Constraints,
    OpenTier,
    Operations,
    Workload,
    break_even_requests_per_day,
    load_workload,
    parse_workload,
    resolve_closed_price,
)

__all__ = [
    "DAYS_PER_MONTH",
    "HOURS_PER_MONTH",
    "Advice",
    "Assumptions",
    "BreakEven",
    "Burden",
    "ByOption",
    "ClosedTier",
    "Constraints",
    "OpenTier",
    "Operations",
    "Option",
    "ShareSource",
    "Workload",
    "break_even_requests_per_day",
    "load_scores",
    "load_workload",
    "make_plan",
    "parse_workload",
    "recommend",
    "resolve_closed_price",
    "share_from_rows",
    "share_from_scores",
]
