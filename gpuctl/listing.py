"""List every provider in parallel and absorb what they say into the store and the ledger."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from . import cost, reconcile
from .errors import GpuctlError

if TYPE_CHECKING:
    from .ports import EngineOps

log = logging.getLogger("gpuctl")


def settle_ended_billing(engine: EngineOps) -> int:
    """Close the ledger where a machine already says its billing ended, for every
    provider that can tell (see cost.settle_ended_billing). Returns segments closed."""
    closed = 0
    for name in engine.settings.providers:
        try:
            provider = engine.provider(name)
        except GpuctlError:
            continue
        closed += cost.settle_ended_billing(engine.store, name, provider)
    return closed


def refresh(
    engine: EngineOps, names: Sequence[str] | None = None, *, include_unmanaged: bool = False
):
    """List every provider in parallel; one failing is reported beside the others."""
    from gpuctl.providers.base import Listing

    names = list(names or engine.settings.providers)

    def one(name: str) -> Listing:
        try:
            listing = engine.provider(name).list_instances(include_unmanaged=include_unmanaged)
        except GpuctlError as exc:
            return Listing(name, (), (("*", exc.one_line()),))
        except Exception as exc:  # never let one provider blank the others
            log.exception("listing %s failed", name)
            return Listing(name, (), (("*", f"{type(exc).__name__}: {exc}"),))
        return listing

    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        listings = list(pool.map(one, names))
    for listing in listings:
        failed_everywhere = listing.errors and any(w == "*" for w, _ in listing.errors)
        if not failed_everywhere:
            absorb_listing(engine, listing)
            engine.store.put_instances(
                listing.provider, listing.instances, complete=listing.complete
            )
        message = "; ".join(f"{w}: {m}" if w != "*" else m for w, m in listing.errors)
        engine.store.set_provider_status(listing.provider, not listing.errors, message)
    engine.findings = reconcile.after_refresh(engine, listings)  # vanished, orphans, died
    return listings


def absorb_listing(engine: EngineOps, listing: Any) -> None:
    """Ledger vs listing: meter what runs unbilled, close what is gone (flagged)."""
    try:
        found = cost.sync_ledger(
            engine.store,
            engine.settings,
            listing.provider,
            listing.instances,
            complete=listing.complete,
            last_seen=engine.store.seen_times(listing.provider),
        )
        cost.sync_spot_prices(engine.store, engine.provider(listing.provider), listing.instances)
    except Exception:  # the meter must never break a listing
        log.exception("reconciling the ledger with %s failed", listing.provider)
        return
    for item in found:
        engine.record_event(item.run_id, "reconciled", item.to_dict())
