"""Tests of the ClientApp side (``client/``)."""
