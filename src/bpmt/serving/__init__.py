"""Serving: the gallery of enrolled walkers, identification, video -> poses, the HTTP service."""
