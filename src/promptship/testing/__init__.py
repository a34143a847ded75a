"""Doubles of the outside services promptship talks to, for tests and benchmarks."""
