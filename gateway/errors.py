"""The gateway's errors. Tree::

    GatewayError (klinestore.core.errors root)
    └── GatewayStartError   the gateway cannot listen (port taken, address refused)
"""

from __future__ import annotations

from klinestore.core.errors import KlinestoreError


class GatewayError(KlinestoreError):
    """Root of the gateway's errors."""


class GatewayStartError(GatewayError):
    """The gateway cannot start (port taken, bind refused)."""
