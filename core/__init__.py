"""The shared vocabulary every layer speaks: the error root, intervals, symbols, the bar, times.

The bottom layer: it imports no other klinestore package, so anything may import it.
"""
