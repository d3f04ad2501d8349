"""Flower ClientApp: the device wrapper around the simulator and the student policy."""
