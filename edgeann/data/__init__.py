"""Data sources for the flows."""
