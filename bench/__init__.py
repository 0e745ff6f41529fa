"""permit-push benchmark: receiver throughput, end-to-end drain and queue-growth cost.

Not part of `make test`. Run it with `python -m bench --help`; docs/performance.md has the
figures and what limits each one.
"""
