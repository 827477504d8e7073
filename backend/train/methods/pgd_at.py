"""PGD adversarial training (Madry et al. 2018): cross-entropy on PGD-k examples of view b."""
from __future__ import annotations

from backend.train.registry import ATTACK_FIELDS, CE_FIELDS, Method, register


def loss(nets, x_u8, y, ctx):
    """Cross-entropy on PGD-k examples of view b (random start, attack_steps steps of step_size)."""
    from backend.train.augment import view_b
    from backend.train.steps import ce_attack, ce_logits

    cfg = ctx.cfg
    x_adv = ce_attack(nets, view_b(x_u8, ctx.gen_aug), y, ctx, cfg.step_size, cfg.attack_steps)
    return ce_logits(nets, x_adv, y, ctx)


METHOD = register(Method("pgd_at", "PGD-AT", "PGD adversarial training", robust=True, contrastive=False,
                         attack="pgd", needs=ATTACK_FIELDS + CE_FIELDS, loss=loss, order=20))
