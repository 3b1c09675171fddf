"""The engine: registry, types, identifiers, DDL, queries, records, import. Never imports Flask."""
