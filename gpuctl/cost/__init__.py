"""The cost ledger, the meter, budgets and the report.

Money is derived, never stored: the state store keeps price segments (a rate in $/h over
a stretch of time, frozen when the instance came up or when its spot price moved), and
every number shown anywhere is a pure function of those segments, the provider's billing
rules and an explicit `now`. So what a run cost is known after its instance (or the
provider's API) is gone, two windows showing the meter agree, and tests freeze the clock.

One module per job, each importing only those listed below it (pyproject.toml's layers
contract for gpuctl.cost holds the order):

    metering      the meter: Meter, compute_meter, meter, burn now, listed_unmetered
    reports       `gpuctl cost report`
    ledger_sync   the ledger against a provider's listing: sync_ledger, LedgerFix, and
                  settling billing a machine says has ended
    budgets       budget states, alerts, committed spend, launch refusal, agent limits
    ledger        ledger writes: open/close segments, spot re-pricing
    segment_math  what segments owe at `now` (pure)
    billing       each provider kind's billing rules and a profile's overrides
    periods       the user's local day and month

`from gpuctl import cost; cost.X` keeps working for every name below.
"""

from .billing import (
    COMPUTE,
    HOURS_PER_MONTH,
    SESSION_GAP,
    STORAGE,
    billing_for,
    billing_lookup,
    billing_of_kind,
    billing_table,
    profile_price,
    stop_margin_seconds,
    storage_rate,
)
from .budgets import (
    RESERVED,
    Alert,
    BudgetState,
    Held,
    agent_budget_seconds,
    budget_states,
    committed,
    exceeded,
    fire_alerts,
    launch_refusal,
    remaining_for,
    run_budgets,
    seconds_to_threshold,
    stop_margin,
)
from .ledger import (
    backfill_spot_prices,
    close_instance,
    open_compute,
    open_storage,
    record_launch,
    record_spot_price,
    stop_instance,
    sync_spot_prices,
)
from .ledger_sync import LedgerFix, settle_ended_billing, sync_ledger
from .metering import (
    InstanceMoney,
    Meter,
    compute_meter,
    describe,
    instance_money,
    listed_unmetered,
    meter,
    projected,
    projected_total,
    run_line,
    spent,
)
from .periods import day_start, days_in_month, month_key, month_start
from .reports import REPORT_BY, Report, ReportRow, build_report, parse_since, report
from .segment_math import Charge, burn_rate, charges, instance_cost

__all__ = [
    "COMPUTE",
    "HOURS_PER_MONTH",
    "REPORT_BY",
    "RESERVED",
    "SESSION_GAP",
    "STORAGE",
    "Alert",
    "BudgetState",
    "Charge",
    "Held",
    "InstanceMoney",
    "LedgerFix",
    "Meter",
    "Report",
    "ReportRow",
    "agent_budget_seconds",
    "backfill_spot_prices",
    "billing_for",
    "billing_lookup",
    "billing_of_kind",
    "billing_table",
    "budget_states",
    "build_report",
    "burn_rate",
    "charges",
    "close_instance",
    "committed",
    "compute_meter",
    "day_start",
    "days_in_month",
    "describe",
    "exceeded",
    "fire_alerts",
    "instance_cost",
    "instance_money",
    "launch_refusal",
    "listed_unmetered",
    "meter",
    "month_key",
    "month_start",
    "open_compute",
    "open_storage",
    "parse_since",
    "profile_price",
    "projected",
    "projected_total",
    "record_launch",
    "record_spot_price",
    "remaining_for",
    "report",
    "run_budgets",
    "run_line",
    "seconds_to_threshold",
    "settle_ended_billing",
    "spent",
    "stop_instance",
    "stop_margin",
    "stop_margin_seconds",
    "storage_rate",
    "sync_ledger",
    "sync_spot_prices",
]
