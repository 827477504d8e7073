"""RobustLens backend: models, data, attacks, saliency, embeddings, training, service and HTTP server.

Nothing in this package imports streamlit or prints; it logs and returns plain data.
"""
__version__ = "0.1.0"
