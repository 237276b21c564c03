"""Routing traces: format, readers and importers, generators, capture and statistics."""
