"""The attacks, one module each. Every module here not starting with "_" is imported the first time the
attack registry (backend.attacks.registry) is read, and registers its attack: adding a module adds the
attack, no list to edit."""
