"""Benchmarks: ``python -m bench`` runs them all and prints each figure beside its baseline.

A benchmark module is ``bench/bench_<area>.py`` with ``run(quick: bool) -> list[Figure]``.
Every figure is measured in the same run as its baseline, so the ratio means something on
any machine; ``BENCHMARKS.md`` records the figures with the command and the machine.
"""

from bench.harness import Figure, measure, time_best

__all__ = ["Figure", "measure", "time_best"]
