"""RobustLens backend: models, data, attacks, saliency, embeddings, training, service and HTTP server.

Nothing in this package imports streamlit or prints; it logs and returns plain data.
"""
from pathlib import Path

__version__ = "0.1.0"

# The source tree that holds backend/, app/ and checkpoints/ (an editable install points here too).
REPO = Path(__file__).resolve().parent.parent
