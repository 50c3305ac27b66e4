"""Business Central API v2.0 and the Entra ID token endpoint, as BC's own AL source behaves."""
