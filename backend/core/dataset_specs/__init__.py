"""The built-in data sets, one module each. Every module here not starting with "_" is imported the first
time the dataset registry (backend.core.datasets) is read, and registers its entry: adding a module adds
the data set, no list to edit."""
