"""Per-session plumbing of the app: the backend client, URL-mirrored state, the task queue, prewarming."""
