"""The order book follows Binance's algorithm: real recordings sync with no gap and match bookTicker."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from frames import depth, event
from klinestore.ingest.orderbook import BRIDGING, BUFFERING, QUEUED_BUFFERED, QUEUED_LEVELS, SYNCED, OrderBook
from klinestore.ingest.protocol import BookTickerEvent, DepthUpdateEvent, decode_depth_snapshot, decode_frame
from klinestore.ingest.protocol.rest import DepthSnapshot


def snapshot(last: int, bids=((100.0, 1.0),), asks=((101.0, 1.0),)) -> DepthSnapshot:
    return DepthSnapshot(lastUpdateId=last, bids=list(bids), asks=list(asks))


def ev(U: int, u: int, pu: int, bids=(), asks=()) -> DepthUpdateEvent:  # noqa: N803
    return event(depth("BTCUSDT", U, u, pu, bids, asks))


def replay(book: OrderBook, tickers: list[BookTickerEvent], after: dict[int, tuple[float, float]], raw: str) -> None:
    data = decode_frame(raw).data
    if isinstance(data, DepthUpdateEvent):
        book.on_event(data)
        if book.synced:
            after[data.u] = (book.best_bid()[0], book.best_ask()[0])  # type: ignore[index]
    elif isinstance(data, BookTickerEvent):
        tickers.append(data)


@pytest.mark.real_data
def test_hftbacktest_recording_syncs_without_a_gap_and_matches_every_book_ticker(shared_data: Path) -> None:
    book = OrderBook("BTCUSDT")
    after: dict[int, tuple[float, float]] = {}
    tickers: list[BookTickerEvent] = []
    with gzip.open(shared_data / "um/ws/hftbacktest-btcusdt-20240808.txt.gz", "rt") as fh:
        for line in fh:
            raw = line.partition(" ")[2]
            if '"stream"' in raw:
                replay(book, tickers, after, raw)
            else:
                assert book.state == BUFFERING and book.needs_snapshot
                assert book.on_snapshot(decode_depth_snapshot(raw))
    assert book.synced and book.resyncs == 0 and book.stale_snapshots == 0 and book.overflows == 0
    matched = [t for t in tickers if t.u in after]
    assert len(matched) > 500
    assert [(t.u, t.b, t.a) for t in matched] == [(t.u, *after[t.u]) for t in matched]
    bids, asks = book.depth(5)
    assert bids == sorted(bids, reverse=True) and asks == sorted(asks) and bids[0][0] < asks[0][0]


@pytest.mark.real_data
def test_cryptofeed_recording_syncs_four_books_from_their_snapshots(shared_data: Path) -> None:
    timeline: list[tuple[float, str, str]] = []
    lines = (shared_data / "um/ws/cryptofeed-usdm-2021-07-22.ws.txt").read_text().splitlines()[1:]
    for line in lines:
        ts, _, raw = line.partition(": ")
        timeline.append((float(ts), "", raw))
    snapshots = (shared_data / "um/rest/cryptofeed-usdm-2021-07-22.depth-snapshots.txt").read_text()
    for line in filter(None, snapshots.splitlines()):
        head, _, raw = line.partition(": ")
        url, _, ts = head.partition(" -> ")
        timeline.append((float(ts), url.split("symbol=")[1].split("&")[0], raw))
    timeline.sort(key=lambda item: item[0])
    books = {s: OrderBook(s) for s in ("SUSHIUSDT", "AKROUSDT", "KEEPUSDT", "CTKUSDT")}
    after: dict[str, dict[int, tuple[float, float]]] = {s: {} for s in books}
    tickers: dict[str, list[BookTickerEvent]] = {s: [] for s in books}
    for _, snap_symbol, raw in timeline:
        if snap_symbol:
            assert books[snap_symbol].on_snapshot(decode_depth_snapshot(raw))
            continue
        symbol = decode_frame(raw).data.s  # type: ignore[union-attr]
        replay(books[symbol], tickers[symbol], after[symbol], raw)
    for symbol, book in books.items():
        assert book.synced and book.resyncs == 0, symbol
        matched = [t for t in tickers[symbol] if t.u in after[symbol]]
        assert matched, symbol
        assert [(t.b, t.a) for t in matched] == [after[symbol][t.u] for t in matched]


def test_events_before_the_snapshot_are_dropped_and_the_spanning_one_applied() -> None:
    book = OrderBook("BTCUSDT")
    book.on_event(ev(1, 5, 0, bids=[(99.0, 3.0)]))
    book.on_event(ev(6, 9, 5, bids=[(100.0, 2.0)]))
    book.on_event(ev(10, 12, 9, asks=[(101.0, 0.0), (102.0, 4.0)]))
    assert book.needs_snapshot and book.best_bid() is None
    assert book.on_snapshot(snapshot(8))  # event 1-5 is older; 6-9 spans 8
    assert book.synced and book.dropped == 1 and book.last_update_id == 12
    assert book.best_bid() == (100.0, 2.0) and book.best_ask() == (102.0, 4.0)


def test_a_broken_chain_forces_a_new_snapshot() -> None:
    book = OrderBook("BTCUSDT")
    book.on_event(ev(5, 10, 4))
    book.on_snapshot(snapshot(7))
    book.on_event(ev(11, 15, 10, bids=[(100.5, 1.0)]))
    assert book.best_bid() == (100.5, 1.0)
    book.on_event(ev(20, 25, 18))  # pu 18 is not 15: updates were lost
    assert book.state == BUFFERING and book.resyncs == 1 and book.needs_snapshot
    assert book.best_bid() is None and book.depth() == ([], [])
    book.on_event(ev(26, 30, 25, asks=[(100.9, 2.0)]))
    assert book.on_snapshot(snapshot(27, bids=[(100.1, 1.0)], asks=[(101.0, 1.0)]))
    assert book.synced and book.best_ask() == (100.9, 2.0) and book.best_bid() == (100.1, 1.0)


def test_a_snapshot_older_than_the_buffer_is_refused() -> None:
    book = OrderBook("BTCUSDT")
    book.on_event(ev(50, 60, 40))
    assert not book.on_snapshot(snapshot(30))
    assert book.state == BUFFERING and book.stale_snapshots == 1 and book.needs_snapshot


def test_a_snapshot_newer_than_the_buffer_waits_for_the_bridge() -> None:
    book = OrderBook("BTCUSDT")
    book.on_event(ev(1, 3, 0))
    assert book.on_snapshot(snapshot(10))
    assert book.state == BRIDGING and book.best_bid() is None
    book.on_event(ev(8, 12, 3, bids=[(100.2, 1.0)]))
    assert book.state == SYNCED and book.best_bid() == (100.2, 1.0)


def test_duplicates_from_a_rotation_overlap_are_skipped() -> None:
    book = OrderBook("BTCUSDT")
    book.on_event(ev(1, 5, 0))
    book.on_snapshot(snapshot(3))
    for e in (ev(6, 8, 5, bids=[(100.3, 1.0)]), ev(6, 8, 5, bids=[(100.3, 1.0)]), ev(9, 9, 8), ev(9, 9, 8)):
        book.on_event(e)
    assert book.synced and book.duplicates == 2 and book.resyncs == 0 and book.last_update_id == 9


def test_removing_the_best_level_finds_the_next_best() -> None:
    book = OrderBook("BTCUSDT")
    book.on_event(ev(1, 1, 0))
    book.on_snapshot(snapshot(1, bids=[(100.0, 1.0), (99.0, 1.0)], asks=[(101.0, 1.0), (102.0, 1.0)]))
    book.on_event(ev(2, 2, 1, bids=[(100.0, 0.0)], asks=[(101.0, 0.0), (100.5, 0.3)]))
    assert book.best_bid() == (99.0, 1.0) and book.best_ask() == (100.5, 0.3)
    book.on_event(ev(3, 3, 2, asks=[(100.5, 0.0)]))
    assert book.best_ask() == (102.0, 1.0)


def test_the_buffer_is_bounded_and_overflow_counted() -> None:
    book = OrderBook("BTCUSDT", max_buffered=10)
    book.fetching()  # the snapshot request is out: every event counts from here
    for i in range(25):
        book.on_event(ev(i * 2 + 1, i * 2 + 2, i * 2))
    assert book.overflows == 15 and book.status()["overflows"] == 15


def test_a_book_waiting_for_its_turn_keeps_only_its_newest_events_and_still_syncs() -> None:
    """A book queued behind the weight budget for a minute must not hold a minute of events (issue 12)."""
    book = OrderBook("BTCUSDT")
    for i in range(500):  # queued: the snapshot, taken later, makes all but the newest useless
        book.on_event(ev(i * 2 + 1, i * 2 + 2, i * 2))
    assert book.status()["buffered"] == QUEUED_BUFFERED and book.overflows == 0
    book.fetching()  # the request goes: from here on nothing is dropped
    for i in range(500, 600):
        book.on_event(ev(i * 2 + 1, i * 2 + 2, i * 2))
    assert book.status()["buffered"] == QUEUED_BUFFERED + 100
    assert book.on_snapshot(snapshot(1050)) and book.synced and book.last_update_id == 1200


def test_a_waiting_book_keeps_few_levels_however_large_the_diffs_and_still_syncs() -> None:
    """At 1000 symbols, books waiting minutes for the weight budget held 8 whole diffs each (issue 12)."""
    book = OrderBook("BTCUSDT")
    wide = [(100.0 - i * 0.01, 1.0) for i in range(QUEUED_LEVELS)]  # one diff alone at the bound
    for i in range(50):
        book.on_event(ev(i * 2 + 1, i * 2 + 2, i * 2, bids=wide, asks=[(101.0, 1.0)]))
    assert book.status()["buffered"] == 1  # the newest, kept whatever its size
    for i in range(50, 60):
        book.on_event(ev(i * 2 + 1, i * 2 + 2, i * 2, bids=[(99.0, 2.0)]))
    assert book.status()["buffered"] == QUEUED_BUFFERED and book.overflows == 0  # small diffs: the newest 8
    book.fetching()
    book.on_event(ev(121, 122, 120, bids=wide))
    assert book.on_snapshot(snapshot(119)) and book.synced and book.last_update_id == 122


def test_a_failed_snapshot_request_gives_back_what_it_buffered() -> None:
    book = OrderBook("BTCUSDT")
    book.fetching()
    for i in range(300):
        book.on_event(ev(i * 2 + 1, i * 2 + 2, i * 2))
    book.fetching(False)  # the request failed: the book waits for its turn again
    assert book.status()["buffered"] == QUEUED_BUFFERED


def test_each_side_keeps_its_best_levels_only() -> None:
    book = OrderBook("BTCUSDT", max_levels=100)
    book.on_event(ev(1, 1, 0))
    book.on_snapshot(snapshot(1, bids=[(1000.0 - i, 1.0) for i in range(100)],
                              asks=[(1001.0 + i, 1.0) for i in range(100)]))
    for u in range(2, 200):  # levels spread away from the touch, both sides
        book.on_event(ev(u, u, u - 1, bids=[(900.0 - u, 2.0)], asks=[(1101.0 + u, 2.0)]))
    assert len(book.bids.levels) <= 125 and len(book.asks.levels) <= 125  # bounded memory
    bids, asks = book.depth(1000)
    assert bids == [(1000.0 - i, 1.0) for i in range(100)]  # the best are never trimmed
    assert asks == [(1001.0 + i, 1.0) for i in range(100)]  # and nothing past the snapshot's edge is served


def test_a_level_past_the_snapshots_edge_is_never_served() -> None:
    """A 4-level snapshot shows asks down to 104: an update at 106 says nothing about 105."""
    book = OrderBook("BTCUSDT", max_levels=4)
    book.on_event(ev(1, 1, 0))
    book.on_snapshot(snapshot(1, bids=[(100.0 - i, 1.0) for i in range(4)], asks=[(101.0 + i, 1.0) for i in range(4)]))
    book.on_event(ev(2, 2, 1, asks=[(106.0, 3.0)]))
    assert book.depth(10)[1] == [(101.0, 1.0), (102.0, 1.0), (103.0, 1.0), (104.0, 1.0)]
    book.on_event(ev(3, 3, 2, asks=[(102.5, 2.0)]))  # 6 levels held: trimmed to 4, the edge moves in to 103
    assert book.depth(10)[1] == [(101.0, 1.0), (102.0, 1.0), (102.5, 2.0), (103.0, 1.0)]
    assert book.status()["known_levels"] == [4, 4]


def test_a_price_walking_to_the_edge_takes_a_new_snapshot_not_a_resync() -> None:
    """Asks taken one by one: once fewer than half of the snapshot's levels are known, the book
    wants a fresh snapshot; it serves the levels it knows until the request goes, then buffers."""
    book = OrderBook("BTCUSDT", max_levels=4)
    book.on_event(ev(1, 1, 0))
    book.on_snapshot(snapshot(1, bids=[(100.0 - i, 1.0) for i in range(4)], asks=[(101.0 + i, 1.0) for i in range(4)]))
    book.on_event(ev(2, 2, 1, asks=[(101.0, 0.0), (106.0, 1.0)]))  # 3 known asks (106 is past the edge)
    assert book.synced and not book.refresh_wanted
    book.on_event(ev(3, 3, 2, asks=[(102.0, 0.0)]))  # 2 known: still half
    assert book.synced and book.depth(10)[1] == [(103.0, 1.0), (104.0, 1.0)] and not book.refresh_wanted
    book.on_event(ev(4, 4, 3, asks=[(103.0, 0.0)]))  # 1 known: the window is spent
    assert book.synced and book.refresh_wanted and book.depth(10)[1] == [(104.0, 1.0)]
    book.on_event(ev(5, 5, 4))  # still synced while the refresh waits for its turn
    assert book.synced and book.last_update_id == 5
    book.begin_refresh()  # the request goes: buffer from here
    assert book.state == BUFFERING and book.refreshes == 1 and book.resyncs == 0 and not book.refresh_wanted
    book.on_event(ev(6, 6, 5))
    assert book.on_snapshot(snapshot(5, asks=[(104.0, 1.0), (105.0, 1.0), (106.0, 1.0), (107.0, 1.0)],
                                     bids=[(100.0 - i, 1.0) for i in range(4)]))
    assert book.synced and book.depth(2)[1] == [(104.0, 1.0), (105.0, 1.0)] and book.last_update_id == 6
