"""The connector service: BC and Twilio clients, simulators, store, workers and the CLI."""
