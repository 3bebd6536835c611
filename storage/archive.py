"""data.binance.vision archives: names, checksums, and strict parsing into bar frames.

Kline archives ``<SYM>-<iv>-YYYY-MM[-DD].(zip|csv)`` hold the 12-column kline CSV, with a
header line (futures from ~2022) or without; aggTrades archives ``<SYM>-aggTrades-...`` hold
``agg_trade_id,price,quantity,first_trade_id,last_trade_id,transact_time,is_buyer_maker``
(spot adds ``is_best_match``). Timestamps are ms or µs (spot from 2025), detected per value.
A ``<file>.CHECKSUM`` (sha256) beside a file is verified.

Everything is validated before anything is returned: a file that cannot be read, a field
that does not parse, a bar whose times do not fit its interval, a price outside its bar's
range or bars out of order raise :class:`ArchiveError` naming the file and the line.
Parsing is Polars' (multi-threaded); only a file that fails it is walked line by line, to
say which line.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv

from klinestore.core.errors import InvalidInterval, InvalidSymbol
from klinestore.core.intervals import check_interval
from klinestore.core.schema import KLINE_FIELDS
from klinestore.core.symbols import check_symbol
from klinestore.storage.errors import ArchiveError
from klinestore.storage.frames import BAR_COLUMNS
from klinestore.storage.resample import bucket_ends, bucket_opens
from klinestore.storage.trades import bars_from_trades

KLINE_CSV_COLUMNS: tuple[str, ...] = (
    "open_time", "open", "high", "low", "close", "volume", "close_time",
    "quote_volume", "trades", "taker_buy_volume", "taker_buy_quote_volume", "ignore",
)
_KLINE_TYPES = {c: pl.Int64 if c in ("open_time", "close_time", "trades") else pl.Float64 for c in KLINE_CSV_COLUMNS}
_KLINE_TYPES["ignore"] = pl.String
#: Fields counted on every line but never converted (the klines' last field is unused).
_UNREAD = frozenset({"ignore"})
_TRADE_TYPES = {
    "agg_trade_id": pl.Int64, "price": pl.String, "quantity": pl.String, "first_trade_id": pl.Int64,
    "last_trade_id": pl.Int64, "transact_time": pl.Int64, "is_buyer_maker": pl.String, "is_best_match": pl.String,
}
_NAME = re.compile(
    r"(?P<symbol>[^-/\\]+)-(?P<kind>aggTrades|\d+(?:s|m|h|d|w|mo|M))-(?P<period>\d{4}-\d{2}(?:-\d{2})?)\.(?:zip|csv)"
)
try:  # an optional, faster inflate (the ``isal`` package); zipfile's zlib otherwise
    from isal import isal_zlib as _isal_zlib

    _INFLATE_ERRORS: tuple[type[Exception], ...] = (_isal_zlib.error,)
except ImportError:  # pragma: no cover - depends on the environment
    _isal_zlib = None
    _INFLATE_ERRORS = ()
_ARROW = {pl.Int64: pa.int64(), pl.Float64: pa.float64(), pl.String: pa.string()}
_BLOCK = 1 << 26
_TEXT = re.compile(rb"\S")  # anything but whitespace
_MICROS = 10**14  # a ms timestamp this large is year 5138: it is µs
MAX_MEMBER_BYTES = 4 << 30


@dataclass(frozen=True, slots=True)
class ArchiveFile:
    """One archive to import: what it holds, taken from its name unless overridden."""

    path: Path
    kind: str  # "klines" or "aggTrades"
    symbol: str
    interval: str  # of the bars it yields ("1m" for aggTrades)


def find_archives(paths: list[Path]) -> list[Path]:
    """The .zip/.csv files among ``paths``, directories searched recursively, sorted."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(p for p in path.rglob("*") if p.is_file() and p.suffix in (".zip", ".csv"))
        elif path.is_file():
            found.append(path)
        else:
            raise ArchiveError(str(path), "no such file or directory")
    return sorted(set(found))


def describe(path: Path, *, symbol: str | None = None, interval: str | None = None) -> ArchiveFile:
    """Symbol, interval and kind of an archive from its name (``symbol``/``interval`` override)."""
    match = _NAME.fullmatch(path.name)
    kind = "aggTrades" if match and match["kind"] == "aggTrades" else "klines"
    name_symbol = match["symbol"] if match else None
    name_interval = None if not match or kind == "aggTrades" else match["kind"].replace("mo", "M")
    chosen = symbol or name_symbol
    if chosen is None:
        raise ArchiveError(str(path), "cannot tell the symbol from the file name; pass --symbol")
    try:
        chosen = check_symbol(chosen)
        bars_interval = "1m" if kind == "aggTrades" else check_interval(interval or name_interval or "")
    except (InvalidSymbol, InvalidInterval) as exc:
        hint = "" if name_interval or interval or kind == "aggTrades" else " (pass --interval)"
        raise ArchiveError(str(path), f"{exc}{hint}") from None
    return ArchiveFile(path, kind, chosen, bars_interval)


def read_archive(spec: ArchiveFile, *, source: str = "import") -> pl.DataFrame:
    """The validated bars of one archive as a working frame (Int64 ms times)."""
    if spec.kind == "aggTrades":
        return bars_from_trades(read_trades(spec), spec.symbol, source=source)
    data = _csv_bytes(spec.path)
    frame = _parse(spec, data, _KLINE_TYPES, minimum=12)
    # numpy from here on: no Polars call per file (each queues on Polars' thread pool)
    series = {c: frame.get_column(c) for c in KLINE_FIELDS}
    columns = {c: s.to_numpy() for c, s in series.items()}
    for c in ("open_time", "close_time"):
        if columns[c].max() >= _MICROS:
            columns[c] = _ms(columns[c])
            series[c] = pl.Series(c, columns[c])
    _validate_klines(spec, data, columns)
    n = frame.height
    series.update(
        symbol=_repeat("symbol", spec.symbol, n), interval=_repeat("interval", spec.interval, n),
        source=_repeat("source", source, n), is_complete=pl.Series("is_complete", np.ones(n, dtype=bool)),
    )
    return pl.DataFrame([series[c] for c in BAR_COLUMNS])


def read_trades(spec: ArchiveFile) -> pl.DataFrame:
    """The validated trades of an aggTrades archive (bool maker flag, ms times, price and quantity as text)."""
    data = _csv_bytes(spec.path)
    return _validate_trades(spec, data, _parse(spec, data, _TRADE_TYPES, minimum=7))


def verified_bytes(path: Path) -> bytes:
    """The CSV text of an archive (a .zip's one member, or a .csv), its ``.CHECKSUM`` verified when beside it."""
    return _csv_bytes(path)


def _csv_bytes(path: Path) -> bytes:
    where = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ArchiveError(where, f"cannot read: {exc.strerror}") from None
    checksum = path.with_name(path.name + ".CHECKSUM")
    if checksum.is_file():
        expected = checksum.read_text(encoding="ascii", errors="replace").split()
        actual = hashlib.sha256(raw).hexdigest()
        if not expected or expected[0].lower() != actual:
            shown = expected[0] if expected else "nothing"
            raise ArchiveError(where, f"checksum mismatch: {checksum.name} says {shown}, the file's sha256 is {actual}")
    if path.suffix != ".zip":
        return raw
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            if len(members) != 1 or not members[0].filename.endswith(".csv"):
                raise ArchiveError(where, f"expected one .csv inside, found {[m.filename for m in members]}")
            if members[0].file_size > MAX_MEMBER_BYTES:
                raise ArchiveError(where, f"{members[0].filename} is larger than {MAX_MEMBER_BYTES} bytes")
            return _member_bytes(raw, archive, members[0])
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, *_INFLATE_ERRORS) as exc:
        raise ArchiveError(where, f"not a readable zip archive (truncated or corrupt?): {exc}") from None


def _member_bytes(raw: bytes, archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> bytes:
    """A member's bytes, inflated in bounded chunks: never more than the size its header claims
    (at most ``MAX_MEMBER_BYTES``) is held, whatever the stream would inflate to; size and CRC-32
    checked as :mod:`zipfile` checks them. ISA-L inflates when it is installed (2.2x faster than
    zlib here); a stored or encrypted member goes through :mod:`zipfile`, which reads at most
    its claimed size too."""
    if member.compress_type != zipfile.ZIP_DEFLATED or member.flag_bits & 1:
        return archive.read(member)
    offset = member.header_offset
    header = raw[offset:offset + 30]
    if len(header) < 30 or header[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"bad local header of {member.filename}")
    start = offset + 30 + int.from_bytes(header[26:28], "little") + int.from_bytes(header[28:30], "little")
    packed = memoryview(raw)[start:start + member.compress_size]
    if len(packed) < member.compress_size:
        raise EOFError(f"{member.filename} is cut short")
    data = _inflate(packed, member.file_size, member.filename)
    if len(data) != member.file_size or (_isal_zlib or zlib).crc32(data) != member.CRC:
        raise zipfile.BadZipFile(f"bad CRC-32 or size of {member.filename}")
    return data


def _inflate(packed: memoryview, claimed: int, name: str) -> bytes:
    """Raw deflate of ``packed``, stopping as soon as it passes ``claimed`` bytes (a zip bomb
    whose header lies is refused after inflating ``claimed`` + one byte, not all of it).

    One call with a length cap: the output is built once (chunked appends into a bytearray
    and a final copy cost 0.2 s of CPU over 2.7 M bars' archives, 40 % of the inflate)."""
    inflater = (_isal_zlib or zlib).decompressobj(-15)
    out = inflater.decompress(packed, claimed + 1)
    if len(out) > claimed:
        raise zipfile.BadZipFile(f"{name} inflates to more than the {claimed} bytes its header claims")
    return out


def _has_header(data: bytes) -> bool:
    return bool(data) and not data.lstrip()[:1].isdigit()


def _parse(spec: ArchiveFile, data: bytes, types: dict[str, pl.DataType], *, minimum: int) -> pl.DataFrame:
    where = str(spec.path)
    header = _has_header(data)
    first = data.find(b"\n") + 1 if header else 0
    if not first and header or not _TEXT.search(data, first):
        raise ArchiveError(where, "no rows")
    end = data.find(b"\n", first)
    width = data[first:end if end >= 0 else len(data)].count(b",") + 1
    if width < minimum or width > len(types):
        raise ArchiveError(where, f"expected {minimum} comma-separated fields, found {width}", 1 + int(header))
    names = list(types)[:width]
    end = len(data)
    while data[end - 1] in b" \t\r\n":  # trailing blank lines are allowed; any other one is refused
        end -= 1
    try:
        # pyarrow's reader parses on this thread (the caller runs files in parallel) and leaves
        # Polars' thread pool free for the importer's other work.
        table = pacsv.read_csv(
            pa.py_buffer(data).slice(0, end),
            read_options=pacsv.ReadOptions(column_names=names, skip_rows=int(header), use_threads=False, block_size=_BLOCK),
            parse_options=pacsv.ParseOptions(newlines_in_values=False, ignore_empty_lines=False),
            convert_options=pacsv.ConvertOptions(
                column_types={n: _ARROW[types[n]] for n in names}, null_values=[""], strings_can_be_null=True,
                include_columns=[n for n in names if n not in _UNREAD],
            ),
        )
        frame = pl.from_arrow(table)
    except (pa.ArrowInvalid, pl.exceptions.PolarsError, ValueError) as exc:
        line, reason = _locate(data, header, [types[n] for n in names])
        raise ArchiveError(where, reason or f"unreadable CSV: {exc}", line) from None
    kept = [n for n in names[:minimum] if n not in _UNREAD]
    if not any(frame.get_column(n).null_count() for n in kept):
        return frame
    nulls = frame.select(pl.any_horizontal(pl.col(n).is_null() for n in kept).arg_true().first()).item()
    if nulls is not None:
        line = nulls + 1 + int(header)
        blank = not data.splitlines()[line - 1].strip()  # the parser reads a blank line as a row of nulls
        raise ArchiveError(where, "blank line" if blank else "missing or empty field", line)
    return frame


def _locate(data: bytes, header: bool, types: list[pl.DataType]) -> tuple[int | None, str | None]:
    """The first line that is blank or whose fields do not parse (only walked when the parser refused the file)."""
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if number == 1 and header:
            continue
        if not line.strip():
            return number, "blank line"
        fields = line.split(",")
        if len(fields) != len(types):
            return number, f"expected {len(types)} fields, found {len(fields)}"
        for column, (text, kind) in enumerate(zip(fields, types), start=1):
            try:
                if kind == pl.Int64:
                    int(text)
                elif kind == pl.Float64:
                    float(text)
            except ValueError:
                return number, f"field {column} is not a number: {text[:40]!r}"
    return None, None


def _to_ms(column: pl.Expr) -> pl.Expr:
    return pl.when(column >= _MICROS).then(column // 1000).otherwise(column)


def _ms(times: np.ndarray) -> np.ndarray:
    """:func:`_to_ms` of an array."""
    return np.where(times >= _MICROS, times // 1000, times)


def _repeat(name: str, value: str, n: int) -> pl.Series:
    return pl.Series(name, [value]).new_from_index(0, n)


def _first_bad(spec: ArchiveFile, data: bytes, checks: list[tuple[np.ndarray, str]]) -> None:
    """Raise for the first row failing any check: the earliest line wins, then the earlier check."""
    found = [(int(np.argmin(ok)), i) for i, (ok, _) in enumerate(checks) if not ok.all()]
    if found:
        row, check = min(found)
        raise ArchiveError(str(spec.path), checks[check][1], row + 1 + int(_has_header(data)))


def _validate_klines(spec: ArchiveFile, data: bytes, columns: dict[str, np.ndarray]) -> None:
    """The checks of one file's bars (numpy, IEEE comparisons: a NaN fails every check it is in)."""
    opens, closes, trades = columns["open_time"], columns["close_time"], columns["trades"]
    o, h, low, c = (columns[x] for x in ("open", "high", "low", "close"))
    rising = np.empty(len(opens), dtype=bool)
    rising[:1] = opens[:1] > -1
    rising[1:] = opens[1:] > opens[:-1]
    finite = np.logical_and.reduce([np.isfinite(columns[x]) for x in ("open", "high", "low", "close", "volume", "quote_volume")])
    volumes = ("volume", "quote_volume", "taker_buy_volume", "taker_buy_quote_volume")
    checks = [
        (bucket_opens(opens, spec.interval) == opens, f"open time is not the start of a {spec.interval} bar"),
        ((closes >= opens) & (closes < bucket_ends(opens, spec.interval)), f"close time outside its {spec.interval} bar"),
        (rising, "open time not after the previous line's"),
        (finite & (low > 0), "prices must be finite and positive"),
        ((low <= h) & (low <= o) & (o <= h) & (low <= c) & (c <= h), "open/close outside low..high"),
        (np.logical_and.reduce([columns[v] >= 0 for v in volumes]) & (trades >= 0), "negative volume or trade count"),
    ]
    _first_bad(spec, data, checks)


def _validate_trades(spec: ArchiveFile, data: bytes, trades: pl.DataFrame) -> pl.DataFrame:
    """Check the trades, then normalize them (bool maker flag, ms times)."""
    maker = pl.col("is_buyer_maker").str.to_lowercase()
    price = pl.col("price").cast(pl.Float64, strict=False)
    quantity = pl.col("quantity").cast(pl.Float64, strict=False)
    checks = [
        (price.is_not_null() & price.is_finite() & (price > 0), "price is not a positive number"),
        (quantity.is_not_null() & quantity.is_finite() & (quantity >= 0), "quantity is not a non-negative number"),
        (pl.col("first_trade_id") <= pl.col("last_trade_id"), "first_trade_id after last_trade_id"),
        (pl.col("agg_trade_id") > pl.col("agg_trade_id").shift(1).fill_null(-1), "agg_trade_id not increasing"),
        (maker.is_in(["true", "false"]), "is_buyer_maker is not true or false"),
    ]
    results = trades.select(*(ok.fill_null(False).alias(str(i)) for i, (ok, _) in enumerate(checks)))
    _first_bad(spec, data, [(results.to_series(i).to_numpy(), message) for i, (_, message) in enumerate(checks)])
    return trades.with_columns(maker == "true", _to_ms(pl.col("transact_time")))
