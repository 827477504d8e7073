"""RSupCon (Kim & Choi 2026): robust supervised contrastive learning, then a linear probe. The step
(three views, the contrastive attack on two of them, L_adv + L_cln) is backend.train.steps.rsupcon_step,
which the side-by-side benchmark against the source also calls."""
from __future__ import annotations

from backend.train.registry import ATTACK_FIELDS, CONTRAST_FIELDS, PROBE_FIELDS, Method, register


def loss(nets, x_u8, y, ctx):
    """L_adv + L_cln from one train-mode forward on [x~_t, x~_s, x_b] (shared/docs/RSUPCON.md)."""
    from backend.train.steps import rsupcon_step, rsupcon_views

    out = rsupcon_step(nets, *rsupcon_views(x_u8, ctx), y, ctx)
    return out["l_adv"] + out["l_cln"]


METHOD = register(Method("rsupcon", "RSupCon", "RSupCon (robust supervised contrastive)", robust=True,
                         contrastive=True, attack="pgd", needs=ATTACK_FIELDS + CONTRAST_FIELDS + PROBE_FIELDS,
                         loss=loss, order=10))
