"""Tests of common.models."""
