"""Benchmarks of the project's training and generation paths against the course's loops (see docs/benchmarks.md)."""
