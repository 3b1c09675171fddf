"""Benchmarks (`make bench`): each compares DMS with PostgreSQL doing the same work directly."""
