"""Tests of common.training."""
