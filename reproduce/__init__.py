"""Training and experiment declarations (issue #4). Not implemented yet: only the entry point exists."""
