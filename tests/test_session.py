"""The connection's control protocol, driven directly: frames and times in, actions out, no sockets."""

from __future__ import annotations

import json
import random
from typing import Any

from klinestore.config import Config
from klinestore.ingest.errors import ControlError
from klinestore.ingest.protocol.control import ControlReply
from klinestore.ingest.session import Action, ConnState, Drop, Refuse, Send, Session, Sleep, Transition


def session(streams: list[str], chunk: int = 2, **changes: Any) -> Session:
    cfg = Config().replace(**{
        "websocket.reconnect.base_delay": 1.0, "websocket.reconnect.max_delay": 60.0,
        "websocket.reconnect.jitter_ratio": 0.0, "websocket.reconnect.max_retries": 10,
        "websocket.reconnect.reset_after": 10.0, "websocket.control_timeout": 5.0, **changes,
    })
    return Session(cfg.websocket, streams, rng=random.Random(1), chunk=chunk)


def sent(actions: list[Action]) -> list[dict[str, Any]]:
    return [json.loads(a.data) for a in actions if isinstance(a, Send)]


def states(actions: list[Action]) -> list[str]:
    return [a.state.value for a in actions if isinstance(a, Transition)]


def ok(request: dict[str, Any]) -> ControlReply:
    return ControlReply(request["id"])


def error(request: dict[str, Any], code: int, msg: str = "Invalid request") -> ControlReply:
    return ControlReply(request["id"], error=ControlError(code, msg))


def subscribe_all(s: Session, now: float = 0.0) -> list[Action]:
    """Open a session and acknowledge every SUBSCRIBE; the actions of the last step."""
    actions = s.opened(now)
    while requests := sent(actions):
        actions = s.reply(ok(requests[0]), now)
    return actions


STREAMS = [f"s{i}usdt@kline_1m" for i in range(5)]


def test_subscribe_goes_in_chunks_one_request_at_a_time_then_subscribed() -> None:
    s = session(STREAMS)
    assert states(s.connecting(0.0)) == ["CONNECTING"]
    first = s.opened(0.0)
    assert states(first) == ["CONNECTED"] and [r["params"] for r in sent(first)] == [STREAMS[:2]]
    second = s.reply(ok(sent(first)[0]), 1.0)
    assert [r["params"] for r in sent(second)] == [STREAMS[2:4]] and states(second) == []
    third = s.reply(ok(sent(second)[0]), 2.0)
    last = s.reply(ok(sent(third)[0]), 3.0)
    assert states(last) == ["SUBSCRIBED"] and s.subscribed == set(STREAMS)
    assert [r["id"] for r in sent(first) + sent(second) + sent(third)] == [1, 2, 3]


def test_requests_are_paced_under_the_control_message_rate() -> None:
    s = session([f"s{i}usdt@kline_1m" for i in range(40)], chunk=1, **{"websocket.control_messages_per_second": 5})
    times: list[float] = []
    now = 0.0
    actions = s.opened(now)
    while s.state != ConnState.SUBSCRIBED:
        for request in sent(actions):
            times.append(now)
            actions = s.reply(ok(request), now)
            break
        else:
            deadline = s.next_deadline()
            assert deadline is not None and deadline >= now
            now = deadline
            actions = s.tick(now)
    assert len(times) == 40
    for i in range(len(times) - 6):  # at most 6 in any second, well under the exchange's 10
        assert times[i + 6] - times[i] >= 1.0 - 1e-9
    assert abs(times[-1] - 39 * 0.2) < 1e-6  # one every 0.2 s


def test_an_error_refuses_only_its_chunk_and_later_chunks_are_still_sent() -> None:
    """Issue 12, bug 2: one refused SUBSCRIBE marked every later, never-sent chunk refused."""
    s = session(STREAMS)
    first = s.opened(0.0)
    second = s.reply(ok(sent(first)[0]), 1.0)
    after_error = s.reply(error(sent(second)[0], 2), 2.0)
    refusals = [a for a in after_error if isinstance(a, Refuse)]
    assert [r.streams for r in refusals] == [STREAMS[2:4]]
    assert [r["params"] for r in sent(after_error)] == [STREAMS[4:]]  # the later chunk goes out
    last = s.reply(ok(sent(after_error)[0]), 3.0)
    assert states(last) == ["SUBSCRIBED"]
    assert s.subscribed == {*STREAMS[:2], STREAMS[4]} and list(s.streams) == [*STREAMS[:2], STREAMS[4]]


def test_too_many_subscriptions_refuses_its_chunk_and_every_queued_one() -> None:
    s = session(STREAMS)
    first = s.opened(0.0)
    after = s.reply(error(sent(first)[0], 4, "Too many subscriptions"), 0.0)
    assert [a.streams for a in after if isinstance(a, Refuse)] == [STREAMS]
    assert sent(after) == [] and list(s.streams) == []


def test_a_request_left_unanswered_drops_the_session() -> None:
    s = session(STREAMS)
    s.opened(0.0)
    assert s.next_deadline() == 5.0 and s.tick(4.9) == []
    assert s.tick(5.0) == [Drop("no reply to request 1 within 5.0s")]


def test_a_reply_to_no_pending_request_is_counted_and_ignored() -> None:
    s = session(STREAMS[:1])
    first = s.opened(0.0)
    assert s.reply(ControlReply(99), 0.0) == [] and s.unmatched_replies == 1
    assert states(s.reply(ok(sent(first)[0]), 0.0)) == ["SUBSCRIBED"]


def test_backoff_grows_while_sessions_drop_after_subscribing_and_resets_after_sustained_data() -> None:
    """Issue 12, bug 3: a SUBSCRIBE acknowledgement reset the backoff, so ack-then-drop retried at base for ever."""
    s = session(STREAMS[:1])
    s.connecting(0.0)
    delays = []
    now = 0.0
    for _ in range(4):  # accepted, subscribed, one frame, dropped
        subscribe_all(s, now)
        assert s.data(STREAMS[0], now + 0.5) is True
        actions = s.closed(now + 1.0, "closed by exchange: 1011")
        assert states(actions) == ["LOST", "RECONNECTING"]
        delays += [a.seconds for a in actions if isinstance(a, Sleep)]
        now += 100.0
        s.connecting(now, "retry")
    assert delays == [1.0, 2.0, 4.0, 8.0]  # no reset on acknowledgement
    subscribe_all(s, now)
    s.data(STREAMS[0], now + 1.0)
    assert s.retries == 4
    s.data(STREAMS[0], now + 10.0)  # reset_after seconds of data: the episode is over
    assert s.retries == 0
    assert [a.seconds for a in s.closed(now + 11.0, "dropped") if isinstance(a, Sleep)] == [1.0]


def test_spent_retries_fail_then_wait_then_a_new_episode() -> None:
    s = session(STREAMS[:1], **{"websocket.reconnect.max_retries": 2, "websocket.reconnect.failed_retry_interval": 30.0})
    seen = []
    for _ in range(3):
        s.connecting(0.0, "retry")
        actions = s.open_failed(0.0, "refused", retryable=True)
        seen.append((states(actions), [a.seconds for a in actions if isinstance(a, Sleep)]))
    assert seen == [(["RECONNECTING"], [1.0]), (["RECONNECTING"], [2.0]), (["FAILED"], [30.0])]
    assert [a.reason for a in s.connecting(0.0, "after FAILED") if isinstance(a, Transition)] == ["after FAILED"]
    assert [a.seconds for a in s.open_failed(0.0, "refused", retryable=True) if isinstance(a, Sleep)] == [1.0]


def test_an_error_retrying_cannot_fix_fails_at_once() -> None:
    s = session(STREAMS[:1])
    s.connecting(0.0)
    assert states(s.open_failed(0.0, "handshake refused: HTTP 403", retryable=False)) == ["FAILED"]


def test_a_stream_removed_while_its_subscribe_is_in_flight_is_unsubscribed_and_not_counted() -> None:
    s = session(STREAMS[:2], chunk=2)
    first = s.opened(0.0)
    assert s.remove([STREAMS[1]], 0.0) == []  # one request at a time: the UNSUBSCRIBE waits
    after = s.reply(ok(sent(first)[0]), 1.0)
    assert [(r["method"], r["params"]) for r in sent(after)] == [("UNSUBSCRIBE", [STREAMS[1]])]
    assert s.subscribed == {STREAMS[0]}
    assert states(s.reply(ok(sent(after)[0]), 2.0)) == ["SUBSCRIBED"]


def test_first_frame_of_a_session_is_delivery_and_reconnects_count_sessions_after_a_loss() -> None:
    s = session(STREAMS[:1])
    subscribe_all(s)
    assert s.data(STREAMS[0], 1.0) is True and s.data(STREAMS[0], 2.0) is False
    assert s.silence(STREAMS[0], 5.0) == 3.0 and s.reconnects == 0
    s.closed(6.0, "reset")
    subscribe_all(s, 7.0)
    assert s.reconnects == 1 and s.data(STREAMS[0], 8.0) is True


def test_resubscribe_unsubscribes_then_subscribes_on_the_same_session() -> None:
    s = session(STREAMS[:1])
    subscribe_all(s)
    first = s.resubscribe(STREAMS[0], 1.0)
    second = s.reply(ok(sent(first)[0]), 2.0)
    assert [(r["method"], r["params"]) for r in sent(first) + sent(second)] == [
        ("UNSUBSCRIBE", [STREAMS[0]]), ("SUBSCRIBE", [STREAMS[0]])]
    s.reply(ok(sent(second)[0]), 3.0)
    assert s.subscribed == {STREAMS[0]} and s.resubscribes == 1 and s.state == ConnState.SUBSCRIBED


def test_stop_ends_without_a_retry() -> None:
    s = session(STREAMS[:1])
    subscribe_all(s)
    s.stop("shutdown")
    assert s.closed(1.0, "closed") == [] and states(s.finished()) == ["DISCONNECTED"]
