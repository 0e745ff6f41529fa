"""A local process harness for the tests and the benchmarks; not shipped with the service.

What tests/ and bench/ both need lives here, once: free loopback ports (`ports`), private
redis-server and PostgreSQL processes and `permit-push` processes (`services`), a fleet of
meters and the closing count of what they pushed (`load`), and valid permit bodies
(`payloads`); a slowloris with a meter pushing alongside (`slowloris`). bench/ imports
nothing from tests/; test-only helpers are in tests/support/.
"""
