"""Scheduled work inside ``klinestore run``: DataQual scoring, reconciliation, the scheduler."""
