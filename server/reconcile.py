"""Reconciliation of sends whose outcome is unknown (skeleton)."""
