"""Energy that follows the home, and the owner first: sensors, idle and heat checks (ADR 0026)."""
