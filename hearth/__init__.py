"""Hearth's Python SDK."""
