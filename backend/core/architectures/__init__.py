"""The built-in architectures, one module each. Every module here not starting with "_" is imported the
first time the architecture registry (backend.core.archs) is read, and registers its entry: adding a
module adds the architecture, no list to edit."""
