"""End-to-end tests: both simulators and the connector over loopback, on SQLite and PostgreSQL, with
the `stack` and `clock` of tests/conftest.py as they are."""
