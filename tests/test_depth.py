"""Order-book resyncs as records: the seed's threshold, the book's chain breaks and requested resyncs."""

from __future__ import annotations

from klinestore.ingest.orderbook import OrderBook
from klinestore.jobs.depth import behind, catch_up_verdict, new_resyncs
from test_orderbook import ev, snapshot


def synced_book() -> OrderBook:
    book = OrderBook("BTCUSDT")
    book.on_event(ev(5, 10, 4))
    book.on_snapshot(snapshot(7))
    book.on_event(ev(11, 15, 10))
    assert book.synced
    return book


def test_behind_is_the_seeds_threshold() -> None:
    assert not behind(1000, 1100, 100) and behind(1000, 1101, 100) and not behind(1000, 900, 100)


def test_a_book_behind_is_resynced_only_if_it_does_not_move() -> None:
    assert catch_up_verdict(1000, 1500, 1400, synced=True) == "caught_up"
    assert catch_up_verdict(1000, 1200, 1400, synced=True) == "lagging"  # read late: its chain is intact
    assert catch_up_verdict(1000, 1000, 1400, synced=True) == "stalled"
    assert catch_up_verdict(1000, 1000, 1400, synced=False) == "broken"


def test_every_resync_is_reported_once_with_its_ids() -> None:
    book = synced_book()
    assert new_resyncs(book, 0, 1) == []
    book.on_event(ev(20, 25, 18))  # pu 18 after 15: updates lost
    (record,) = new_resyncs(book, 0, 99)
    assert (record.book_id, record.ref_id, record.ref_source, record.field) == (15.0, 18.0, "depth_stream", "pu")
    assert record.row() == (99, "BTCUSDT", "depth", record.event_ms, "pu", 15.0, 18.0, "depth_stream", "resynced")
    assert new_resyncs(book, 1, 100) == []  # seen


def test_a_requested_resync_is_left_to_the_check_that_requested_it() -> None:
    book = synced_book()
    book.request_snapshot()
    assert book.resyncs == 1 and book.recent_resyncs[-1].cause == "requested"
    assert new_resyncs(book, 0, 5) == []


def test_resyncs_beyond_what_the_book_remembers_come_without_ids() -> None:
    book = synced_book()
    for i in range(20):
        base = 100 * (i + 1)
        book.on_event(ev(base, base + 5, base - 1))  # a break (or the bridging event after a snapshot)
        book.on_snapshot(snapshot(base + 2))
    assert book.resyncs == 20
    records = new_resyncs(book, 0, 7)
    assert len(records) == 20
    assert [r.book_id for r in records[:4]] == [None] * 4 and all(r.book_id is not None for r in records[4:])
