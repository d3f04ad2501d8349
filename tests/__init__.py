"""Test suite; mirrors the package layout."""
