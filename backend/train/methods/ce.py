"""Standard training: cross-entropy on view b (not robust; the zoo's reference)."""
from __future__ import annotations

from backend.train.registry import CE_FIELDS, Method, register


def loss(nets, x_u8, y, ctx):
    """Cross-entropy on view b."""
    from backend.train.augment import view_b
    from backend.train.steps import ce_logits

    return ce_logits(nets, view_b(x_u8, ctx.gen_aug), y, ctx)


METHOD = register(Method("ce", "CE", "Cross-entropy (standard, not robust)", robust=False, contrastive=False,
                         attack=None, needs=CE_FIELDS, loss=loss, order=60))
