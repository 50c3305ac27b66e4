"""Business Central API v2.0 client: msal auth, OData reads with paging, PATCH with If-Match, webhooks."""
