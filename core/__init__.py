"""Shared plumbing: settings, credentials, HTTP, errors, Case, Sentinel client, state store."""
