"""video (in progress)."""
