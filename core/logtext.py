"""Log lines that text from the network cannot forge: one event per line, escaped, capped.

Frames, error replies and file contents reach log messages (a malformed frame is logged with
what was wrong in it). Written raw, a newline followed by a fake timestamp makes a forged
``CRITICAL`` line, and terminal escape codes rewrite what an operator sees. So every record's
message is escaped before it is written: control and other non-printing characters become
``\\n``, ``\\x1b``, ``\\u202e``..., backslashes are doubled, and it is capped at
:data:`MAX_MESSAGE` characters. A traceback keeps its lines, each indented, so no line of it
starts like an event either.
"""

from __future__ import annotations

import logging
import unicodedata

#: Characters of one log message; the rest is cut with a note of how much.
MAX_MESSAGE = 2000
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def escaped(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` on one line with every non-printing character escaped, at most ``limit`` characters kept."""
    cut = len(text) - limit
    if cut > 0:
        text = text[:limit]
    out = []
    for char in text:
        if char in _NAMED:
            out.append(_NAMED[char])
        elif unicodedata.category(char)[0] in ("C", "Z") and char != " ":
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
        else:
            out.append(char)
    line = "".join(out)
    return line + f"... ({cut} more characters)" if cut > 0 else line


class OneLineFormatter(logging.Formatter):
    """A :class:`logging.Formatter` whose message is :func:`escaped` and whose traceback is indented."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        record.message = escaped(record.message)
        return super().formatMessage(record)

    def formatException(self, ei) -> str:  # noqa: N802, ANN001 - logging's signature
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 - logging's name
        return _indented(super().formatStack(stack_info))


def _indented(text: str) -> str:
    return "\n".join("    " + escaped(line, 4 * MAX_MESSAGE) for line in text.splitlines())
