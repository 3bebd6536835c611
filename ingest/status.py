"""The health snapshot (``<data-dir>/status.json``): what an operator or a test needs at a glance.

Fixed fields (acceptance checks read them): ``mode``, ``connections`` (each ``id``, ``state``,
``streams``, ``retries``, ``last_message_age_s``), ``missing_streams``, ``counters``
(``messages``, ``rejected`` by reason, ``reconnects``, ...), ``ledger`` (REST calls and
weight per endpoint), ``warming_up``. The rest is for the demanding user: exchange time,
uptime, per-timeframe readiness, order books, marks, gaps, callbacks, recent transitions.

This module builds the snapshot; :mod:`klinestore.storage.status` writes it (storage owns
every byte on disk).
"""

from __future__ import annotations

import time
from typing import Any

from klinestore.core.times import iso
from klinestore.ingest.feed import Feed


def snapshot(feed: Feed) -> dict[str, Any]:
    """The feed's health as plain JSON-able data."""
    now_ms = feed.clock.now_ms()
    pool, d, state = feed.pool, feed.dispatcher, feed.state
    books = {s: b.status() for s, b in sorted(state.books.items())}
    hooks = {h.name: h.stats() for h in (feed.kline_close, feed.gap, feed.gap_filled) if h}
    counters: dict[str, Any] = {
        "messages": d.messages,
        "rejected": dict(sorted(state.rejected.items())),
        "reconnects": pool.reconnects(),
        "closed_bars": d.closed,
        "unexpected_frames": d.unexpected,
        "irregular_closes": sum(s.irregular_closes for s in state.klines.values()),
        "gaps": feed.gaps_reported,
        "sink_errors": d.sink_errors,
        "sink_held_bars": d.held,
        "sink_dropped_bars": d.sink_dropped,
        "resubscribes": sum(c.resubscribes for c in pool.connections),
        "rotations": pool.rotations,
        "rotation_failures": pool.rotation_failures,
        "silent_drops": pool.silent_drops,
        "internal_errors": sum(c.internal_errors for c in pool.connections),
        "book_resyncs": sum(b.resyncs for b in state.books.values()),
        "book_refreshes": sum(b.refreshes for b in state.books.values()),
        "depth_snapshots": feed.depth_sync.fetched,
        "depth_snapshot_failures": feed.depth_sync.failed,
        "callback_failures": sum(s["failures"] for h in hooks.values() for s in h.values()),
        "callback_dropped": sum(s["dropped"] for h in hooks.values() for s in h.values()),
        "connection_events": feed.events.total,
        "invalid_listings": feed.listings.invalid,  # exchangeInfo names refused by check_symbol, never subscribed
    }
    if feed.backfill is not None:
        counters.update(backfill_requested=feed.backfill.requested, backfilled_bars=feed.backfill.filled_bars,
                        backfill_failed=feed.backfill.failed, backfill_pending=feed.backfill.pending)
    marks = {}
    for symbol in state.marks.symbols():
        m = state.marks.get(symbol)
        if m is not None:
            marks[symbol] = {"mark_price": m.mark_price, "funding_rate": m.funding_rate, "event_time": iso(m.event_ms)}
    return {
        "mode": feed.config.modes.name,
        "running": feed.running,
        "written_at": iso(int(time.time() * 1000)),
        "exchange_time": iso(now_ms),
        "exchange_time_ms": now_ms,
        "clock": {"synced": feed.clock.synced, "rate": round(feed.clock.rate, 3)},
        "loop_lag_ms": {"last": round(feed.lag.last * 1000, 3), "max": round(feed.lag.max * 1000, 3)},
        "uptime_s": round(time.monotonic() - feed.started_at, 3),
        "symbols": sorted(feed.symbols),
        "skipped_symbols": feed.skipped_symbols,
        "connections": pool.status(),
        "missing_streams": feed.missing_streams(),
        "quiet_streams": feed.quiet_streams(),
        "silent_streams": feed.pool.silent_streams(),
        "counters": counters,
        "ledger": feed.ledger.totals(),
        "rest": feed.rest.status(),
        "warming_up": [{"symbol": s, "interval": i} for s, i in state.warming_up()],
        "timeframes": state.readiness(),
        "order_books": books,
        "books_in_sync": sum(1 for b in state.books.values() if b.synced),
        "marks": marks,
        "mark_series": feed.series.status() if feed.series is not None else {},  # mark/index bars, funding
        "recent_gaps": [
            {"symbol": g.symbol, "interval": g.interval, "start": iso(g.start_open_ms), "end": iso(g.end_open_ms),
             "bars": g.bar_count(), "reason": g.reason}
            for g in feed.recent_gaps
        ],
        "refused_streams": dict(pool.refused),
        "unplaced_streams": list(pool.unplaced),
        "callbacks": hooks,
        "memory": {"ring_bytes": state.ring_bytes()},
        "recent_events": [e.to_dict() for e in feed.events.recent(20)],
    }
