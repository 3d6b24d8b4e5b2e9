"""gallery (in progress)."""
