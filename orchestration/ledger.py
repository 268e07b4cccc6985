"""Moved to core/sendonce.py (the user's confirmation in response/ sends mail once too); kept for imports."""

from core.sendonce import FINAL, LEASE_SECONDS, TABLE, SendLedger

__all__ = ["FINAL", "LEASE_SECONDS", "TABLE", "SendLedger"]
