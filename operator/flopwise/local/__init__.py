"""The embedded default: a whole campaign on one machine, runs as local processes."""
