"""Twilio Messages, Calls, Verify and Accounts, as Twilio's documentation and OpenAPI describe them."""
