"""BC records in, outbox rows out: notifications, fetcher, sweep, poller, subscriptions, reminders."""
