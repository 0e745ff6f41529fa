"""Helpers the test modules share; no test module imports another test module.

`processes`: the real `permit-push` CLI as subprocesses; `metrics`: deploy/metrics.yml, the
PromQL scanner, exposition checks and sample parsing. What bench/ needs too (ports, private
servers, the meter fleet) is in harness/; test data is in tests/factories.py.
"""
