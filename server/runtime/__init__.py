"""Process plumbing below everything else: clock, logs, crash points, loop lag, the worker loop, retries."""
