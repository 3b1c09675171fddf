"""HTTP API: thin blueprints that parse, call the engine and serialize."""
