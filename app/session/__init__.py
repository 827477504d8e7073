"""Per-session plumbing of the app: the backend client, URL-mirrored state, the task queue, and the app's
policy for its first views (home: the default sample and the controls' first values; lesson: the Lesson's
steps), computed ahead at launch."""
