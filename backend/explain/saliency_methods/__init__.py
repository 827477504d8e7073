"""The saliency methods, one module each. Every module here not starting with "_" is imported the first
time the saliency registry (backend.explain.saliency_registry) is read, and registers its method: adding
a module adds the method, no list to edit."""
