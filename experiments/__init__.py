"""Entry points: Hydra runs, the simulator CLI, benchmarks, reports and deployment helpers."""
