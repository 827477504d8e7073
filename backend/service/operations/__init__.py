"""Operations added to the service's API outside backend/service/api.py: each module here declares its
operations with `@Api.add @operation(...)` and a callable impl, and is imported by
backend.service.api.operations() (so the server has their routes and every client their methods).
Keep a module here torch-free at import: the app imports it in HTTP mode; import torch inside the impl."""
