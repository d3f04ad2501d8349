"""Tests for the federated client logic."""
