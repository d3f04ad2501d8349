"""Flower ServerApp and the strategies (KECO and the baselines)."""
