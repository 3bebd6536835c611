"""The pool's placement and rotation planner, driven directly: events in, ownership changes out."""

from __future__ import annotations

import pytest

from klinestore.ingest.placement import Assign, Open, Placement, Release, Retire
from klinestore.ingest.protocol.urls import PlanError


def kl(*names: str) -> list[str]:
    return [f"{n}usdt@kline_1m" for n in names]


def test_start_plans_balanced_connections_and_every_stream_has_an_owner() -> None:
    p = Placement(prefer=2)
    changes = p.start(kl("a", "b", "c", "d", "e"))
    assert all(isinstance(c, Open) for c in changes)
    assert sorted(len(c.streams) for c in changes if isinstance(c, Open)) == [1, 2, 2]
    assert sorted(p.streams()) == sorted(kl("a", "b", "c", "d", "e"))


def test_a_bound_that_cannot_fit_even_at_the_exchange_limit_is_a_config_error() -> None:
    with pytest.raises(PlanError, match="max_connections"):
        Placement(prefer=200, max_connections=1).start([f"s{i}usdt@kline_1m" for i in range(1025)])


def test_later_streams_open_connections_or_pass_the_preference_only_at_the_bound() -> None:
    free = Placement(prefer=2)
    free.start(kl("a", "b", "c", "d"))
    changes = free.add(kl("n0", "n1", "n2"))
    assert [type(c).__name__ for c in changes] == ["Open", "Open"]
    assert sorted(len(m) for m in free.members.values()) == [1, 2, 2, 2]
    bound = Placement(prefer=2, max_connections=2)
    bound.start(kl("a", "b", "c", "d"))
    changes = bound.add(kl("n0", "n1", "n2"))
    assert all(isinstance(c, Assign) for c in changes) and bound.unplaced == []
    assert sorted(len(m) for m in bound.members.values()) == [3, 4]


def test_a_stream_removed_while_a_rotation_waits_is_released_and_can_come_back() -> None:
    """Issue 12, bug 1: a delisting during a 24 h rotation left the stream in the ownership map."""
    a, b = kl("aaa", "bbb")
    p = Placement(prefer=200)
    (first,) = p.start([a, b])
    assert isinstance(first, Open)
    replacement = p.begin_rotation(first.conn_id)
    assert replacement.streams == [a, b] and p.owner[b] == first.conn_id
    assert p.remove([b]) == [Release(first.conn_id, [b])]  # delisted while the replacement comes up
    changes = p.complete_rotation(replacement.conn_id, "rotated")
    assert changes == [Release(replacement.conn_id, [b]), Retire(first.conn_id, "rotated")]
    assert p.streams() == [a] and b not in p.owner and p.connections() == [replacement.conn_id]
    assert p.add([b]) == [Assign(replacement.conn_id, [b])]  # listed again: placed
    assert p.owner[b] == replacement.conn_id


def test_a_stream_added_while_a_rotation_waits_moves_to_the_replacement() -> None:
    p = Placement(prefer=200)
    (first,) = p.start(kl("aaa"))
    assert isinstance(first, Open)
    replacement = p.begin_rotation(first.conn_id)
    assert p.add(kl("ccc")) == [Assign(first.conn_id, kl("ccc"))]
    changes = p.complete_rotation(replacement.conn_id, "rotated")
    assert changes == [Assign(replacement.conn_id, kl("ccc")), Retire(first.conn_id, "rotated")]
    assert set(p.owner.values()) == {replacement.conn_id}


def test_a_rotation_of_a_connection_retired_meanwhile_is_obsolete() -> None:
    p = Placement(prefer=200)
    (first,) = p.start(kl("aaa"))
    assert isinstance(first, Open)
    replacement = p.begin_rotation(first.conn_id)
    assert p.remove(kl("aaa")) == [Release(first.conn_id, kl("aaa")), Retire(first.conn_id, "no streams left")]
    assert p.complete_rotation(replacement.conn_id, "rotated") == [Retire(replacement.conn_id, "rotation obsolete")]
    assert p.streams() == [] and p.connections() == []


def test_too_many_subscriptions_lowers_the_limit_and_places_the_streams_elsewhere() -> None:
    p = Placement(prefer=10)
    (first,) = p.start(kl("a", "b", "c", "d", "e"))
    assert isinstance(first, Open)
    changes = p.refuse(first.conn_id, kl("d", "e"), too_many=True, reason="code 4", holds=3)
    assert p.limit[first.conn_id] == 3
    assert [type(c).__name__ for c in changes] == ["Open"] and changes[0].streams == kl("d", "e")  # type: ignore[union-attr]
    assert p.refused == {} and sorted(p.streams()) == sorted(kl("a", "b", "c", "d", "e"))


def test_another_refusal_is_recorded_and_not_placed_again() -> None:
    p = Placement(prefer=10)
    (first,) = p.start(kl("a", "bad"))
    assert isinstance(first, Open)
    assert p.refuse(first.conn_id, kl("bad"), too_many=False, reason="code 2: Invalid request", holds=1) == []
    assert p.refused == {kl("bad")[0]: "code 2: Invalid request"} and p.streams() == kl("a")


def test_routes_are_never_mixed() -> None:
    p = Placement(prefer=200)
    changes = p.start([*kl("a"), "aausdt@depth@100ms"])
    assert sorted((c.route.value, c.streams) for c in changes if isinstance(c, Open)) == [
        ("market", kl("a")), ("public", ["aausdt@depth@100ms"])]
    assert p.add(["bbusdt@depth@100ms"]) == [Assign(p.owner["aausdt@depth@100ms"], ["bbusdt@depth@100ms"])]
