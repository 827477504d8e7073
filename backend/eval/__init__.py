"""Evaluation of checkpoints (clean / PGD-20 / AutoAttack) and their reference embeddings."""
