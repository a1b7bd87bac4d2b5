"""Benchmarks: ``python -m minissd.bench core|nn|data|cuda|train|peer``.

Each benchmark prints measured figures next to a baseline measured in the same run (a plain
NumPy version, or numpy.matmul as the machine's practical peak), never against a number
remembered from another machine. Tables recorded from these runs live in docs/benchmarks.md.
"""
