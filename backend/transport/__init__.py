"""Transport of the Service across processes: the wire codec, the HTTP client and the FastAPI server."""
