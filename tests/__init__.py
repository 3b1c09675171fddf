"""DMS test suite."""
