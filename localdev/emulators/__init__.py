"""Loopback emulators of the external APIs, following their documented contracts."""
