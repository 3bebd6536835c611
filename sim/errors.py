"""Errors of the exchange simulator.

Tree::

    KlinestoreError
    └── SimError               the simulator cannot do what was asked
        ├── SimConfigError     a bad simulator option (names the option)
        ├── FaultError         a fault-injection body that is not a valid fault (HTTP 400)
        ├── ListingError       a listing or delisting that cannot be scheduled (HTTP 400)
        └── ReplayError        a replay directory that holds no usable Binance archive

The control endpoints translate FaultError and ListingError into HTTP 400 with the message,
so a test that sends a bad body learns what was wrong.
"""

from __future__ import annotations

from klinestore.core.errors import KlinestoreError


class SimError(KlinestoreError):
    """Root of simulator errors."""


class SimConfigError(SimError, ValueError):
    """A simulator option is invalid; ``option`` names it."""

    def __init__(self, option: str, message: str) -> None:
        self.option = option
        super().__init__(f"sim option {option}: {message}")


class FaultError(SimError, ValueError):
    """A fault body that cannot be injected."""


class ListingError(SimError, ValueError):
    """A listing request that cannot be scheduled."""


class ReplayError(SimError):
    """A replay directory without usable archive files, or a file that is not one."""
