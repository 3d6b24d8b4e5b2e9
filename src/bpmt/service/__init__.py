"""service (in progress)."""
