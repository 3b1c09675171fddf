"""Fault injection: real processes, private PostgreSQL and Redis the tests stop and start."""
