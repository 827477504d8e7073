"""Fast adversarial training (Wong et al. 2020): one FGSM step from a random start in the eps-ball."""
from __future__ import annotations

from backend.train.registry import CE_FIELDS, Method, register


def loss(nets, x_u8, y, ctx):
    """Cross-entropy on one FGSM step of fgsm_step from a uniform random start in the eps-ball."""
    from backend.train.augment import view_b
    from backend.train.steps import ce_attack, ce_logits

    x_adv = ce_attack(nets, view_b(x_u8, ctx.gen_aug), y, ctx, ctx.cfg.fgsm_step, 1)
    return ce_logits(nets, x_adv, y, ctx)


METHOD = register(Method("fgsm_rs", "FGSM-RS", "FGSM-RS (fast adversarial training)", robust=True,
                         contrastive=False, attack="fgsm",
                         needs=("eps", "fgsm_step", "attack_steps") + CE_FIELDS,  # attack_steps: the PGD validation
                         loss=loss, order=50))
