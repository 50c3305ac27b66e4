"""Outbox rows in, Twilio calls and statuses out: dispatcher, budget, reconcile, release check, status."""
