"""Users, passwords and token families."""
