"""The core layer: models, checkpoints, data, uploads and the shared error types (no service, no UI)."""
