"""Benchmark suites; each module exposes ``run(args: dict) -> dict`` and is picked by name."""
