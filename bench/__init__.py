"""The benchmark harness: `python -m bench.run [--smoke]` (see bench/README.md).

Everything here is benchmark tooling; none of it is imported by the service.
"""
