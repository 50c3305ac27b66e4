"""Quiet hours (skeleton)."""
