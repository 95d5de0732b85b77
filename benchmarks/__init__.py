"""Benchmarks of the dialler_async SDK: ``python -m benchmarks`` (full) or ``--quick`` (smoke).

Every comparison runs its contenders interleaved in one process against a server in a separate
process, repeats them, and reports medians, spreads and ratios. See ``benchmarks/README.md``.
"""
