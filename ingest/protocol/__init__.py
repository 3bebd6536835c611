"""Binance USD-M futures market-data protocol as pure code: no sockets, no clocks.

Stream names, routed URLs, grouping streams into connections, typed frame decoding, control
requests and replies, REST bodies and request weights. The connection layer and the
simulator both build on this module, so the exchange's rules live in one place.
"""

from klinestore.ingest.protocol.control import (
    ControlReply,
    ErrorCode,
    get_property,
    list_subscriptions,
    set_property,
    subscribe,
    unsubscribe,
)
from klinestore.ingest.protocol.events import (
    AggTradeEvent,
    BookTickerEvent,
    ContinuousKlineEvent,
    DepthUpdateEvent,
    Event,
    Frame,
    Kline,
    KlineEvent,
    MarkPriceEvent,
    TradeEvent,
    decode_frame,
    decode_single,
)
from klinestore.ingest.protocol.rest import (
    DepthSnapshot,
    ExchangeInfo,
    RestKline,
    SymbolInfo,
    decode_depth_snapshot,
    decode_exchange_info,
    decode_klines,
    decode_server_time,
    depth_weight,
    klines_weight,
)
from klinestore.ingest.protocol.streams import (
    Route,
    StreamName,
    agg_trade_stream,
    depth_stream,
    kline_stream,
    mark_price_stream,
    parse_stream,
)
from klinestore.ingest.protocol.urls import ConnectionPlan, plan_connections, stream_url

__all__ = [
    "AggTradeEvent", "BookTickerEvent", "ConnectionPlan", "ContinuousKlineEvent", "ControlReply",
    "DepthSnapshot", "DepthUpdateEvent", "ErrorCode", "Event", "ExchangeInfo", "Frame", "Kline",
    "KlineEvent", "MarkPriceEvent", "RestKline", "Route", "StreamName", "SymbolInfo", "TradeEvent",
    "agg_trade_stream", "decode_depth_snapshot", "decode_exchange_info", "decode_frame",
    "decode_klines", "decode_server_time", "decode_single", "depth_stream", "depth_weight",
    "get_property", "kline_stream", "klines_weight", "list_subscriptions", "mark_price_stream",
    "parse_stream", "plan_connections", "set_property", "stream_url", "subscribe", "unsubscribe",
]
