"""The training methods, one module each. Every module here not starting with "_" is imported the first
time the training registry (backend.train.registry) is read, and registers its method with its loss:
adding a module adds the method, no list to edit. The modules load no torch until a loss runs (the
job runner reads the registry without torch); the shared step machinery is backend.train.steps."""
