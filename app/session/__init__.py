"""Per-session plumbing of the app: the backend client, URL-mirrored state, the task queue, and the
home page's default view (home, over backend.transport.home)."""
