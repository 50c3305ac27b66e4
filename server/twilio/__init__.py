"""Twilio: async REST client (client.py), error classification (errors.py), resource models
(models.py), webhook signatures (signatures.py) and TwiML (twiml.py)."""
