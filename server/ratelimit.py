"""Send budget (skeleton)."""
