"""The campaign engine: pure decisions over (spec, status, observed runs); no Kubernetes, no processes."""
