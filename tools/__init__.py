"""The repository's tools: scripts, and the ``tools.experiments`` package they share."""
