"""Per-session plumbing of the app: the backend client, URL-mirrored state, the task queue
(the home page's precomputation is backend.transport.home)."""
