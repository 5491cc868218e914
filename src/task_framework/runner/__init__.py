"""Isolated execution: per-version environments and worker processes."""
