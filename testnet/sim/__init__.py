"""The deterministic simulator: real protocol engines on a simulated network (`hearth sim`)."""
