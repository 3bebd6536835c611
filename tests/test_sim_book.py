"""The depth model: diffs and snapshots agree, so Binance's sync algorithm rebuilds the book."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from klinestore.sim.book import STEP_MS, Books, Diff, Snapshot, apply
from klinestore.sim.generator import GeneratedSource
from klinestore.sim.listings import Listings
from klinestore.sim.market import Market

START = 1_714_521_600_000


def books(seed: int, symbol: str, levels: int = 1000) -> Books:
    source = GeneratedSource(seed)
    m = Market(source, Listings({symbol: 1_600_000_000_000}), START)
    return Books(seed, levels, prices_at=m.prices_at, tick_units=lambda s: m.spec(s).tick_units, mean_qty=source.typical_qty)


def sync(snapshot: Snapshot, events: list[Diff]) -> tuple[dict[int, int], dict[int, int], int]:
    """Binance's documented algorithm on buffered events; returns the book and the last u."""
    bids = dict(zip(snapshot.bids.ticks.tolist(), snapshot.bids.qty.tolist()))
    asks = dict(zip(snapshot.asks.ticks.tolist(), snapshot.asks.qty.tolist()))
    last_u = None
    for event in events:
        if event.final_update_id < snapshot.last_update_id:
            continue  # 3. drop what the snapshot already holds
        if last_u is None:
            assert event.first_update_id <= snapshot.last_update_id <= event.final_update_id  # 4.
        else:
            assert event.prev_final_update_id == last_u  # 5. the pu chain
        apply(bids, event.bids)
        apply(asks, event.asks)
        last_u = event.final_update_id
    assert last_u is not None
    return bids, asks, last_u


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31),
    symbol=st.sampled_from(["BTCUSDT", "ETHUSDT", "DOGEUSDT", "NEWCOINUSDT"]),
    start=st.integers(0, 3_000_000),
    windows=st.lists(st.sampled_from([1, 2, 5, 10, 37]), min_size=5, max_size=60),
    snap_after=st.integers(0, 4),
    limit=st.sampled_from([100, 500, 1000]),
)
def test_depth_stream_syncs_with_snapshots(seed: int, symbol: str, start: int, windows: list[int], snap_after: int, limit: int) -> None:
    book = books(seed, symbol).get(symbol)
    k = (START + start) // STEP_MS
    events = []
    for n in windows:
        events.append(book.diff(k, k + n))
        k += n
    snap_step = (START + start) // STEP_MS + sum(windows[:snap_after]) + 1  # while events were buffered
    snapshot = book.snapshot(snap_step, limit)
    bids, asks, last_u = sync(snapshot, events)
    truth = book.snapshot(book.step_of(last_u))
    assert truth.last_update_id == last_u
    true_bids = dict(zip(truth.bids.ticks.tolist(), truth.bids.qty.tolist()))
    true_asks = dict(zip(truth.asks.ticks.tolist(), truth.asks.qty.tolist()))
    # Every level the client holds is right; the only levels it lacks lay beyond its snapshot's
    # depth and have not changed since (Binance's books behave the same way).
    assert bids.items() <= true_bids.items() and asks.items() <= true_asks.items()
    assert all(t < snapshot.bids.ticks.min() for t in true_bids.keys() - bids.keys())
    assert all(t > snapshot.asks.ticks.max() for t in true_asks.keys() - asks.keys())


def test_book_shape() -> None:
    book = books(7, "BTCUSDT").get("BTCUSDT")
    snap = book.snapshot(START // STEP_MS, 1000)
    assert len(snap.bids.ticks) == len(snap.asks.ticks) == 1000
    assert snap.bids.ticks[0] < snap.asks.ticks[0]  # never crossed
    assert (snap.bids.ticks[:-1] > snap.bids.ticks[1:]).all() and (snap.asks.ticks[:-1] < snap.asks.ticks[1:]).all()
    ids = [book.update_id(k) for k in range(1000, 1100)]
    assert all(b > a for a, b in zip(ids, ids[1:])) and len({b - a for a, b in zip(ids, ids[1:])}) > 1
    diff = book.diff(1000, 1002)
    assert 0 < len(diff.bids.ticks) + len(diff.asks.ticks) < 200  # a few levels per 100 ms, not the book
