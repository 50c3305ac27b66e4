"""Every HTTP surface of the connector: thin handlers that call into planning, sending and changes."""
