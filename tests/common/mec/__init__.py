"""Tests for the MEC simulator."""
