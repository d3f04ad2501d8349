"""Tests of the experiment entry points."""
