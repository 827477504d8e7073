"""Explanations of a model: saliency maps and their metrics, the feature lens, embeddings."""
