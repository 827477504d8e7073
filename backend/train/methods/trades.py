"""TRADES (Zhang et al. 2019): cross-entropy on clean images plus beta times the KL divergence between
the clean and the adversarial predictions, the adversarial images ascending that KL."""
from __future__ import annotations

from backend.train.registry import ATTACK_FIELDS, CE_FIELDS, Method, register


def loss(nets, x_u8, y, ctx):
    """CE(f(x), y) + beta * KL(f(x) || f(x~)) on view b; the attack ascends the KL from
    x + 0.001 N(0, 1) (TRADES' start), attack_steps steps, in eval mode."""
    import torch
    import torch.nn.functional as F

    from backend.attacks.projected_gradient import pgd
    from backend.train.augment import view_b
    from backend.train.steps import eval_mode, kl_div

    cfg = ctx.cfg
    x = view_b(x_u8, ctx.gen_aug)
    with eval_mode(nets.core):
        with torch.no_grad(), ctx.autocast():
            p_clean = nets.attack(x).float().softmax(1)

        def loss_fn(xa):
            ctx.check()
            with ctx.autocast():
                return kl_div(nets.attack(xa), p_clean)

        noise = torch.randn(x.shape, device=x.device, generator=ctx.gen_dev)
        x_adv = pgd(loss_fn, x, cfg.eps, cfg.step_size, cfg.attack_steps, rand_init=False,
                    x_init=x + 0.001 * noise)
    with ctx.autocast():
        logits = nets.train(torch.cat([x, x_adv]), chunks=2).float()  # (2B, classes)
    clean, adv = logits.chunk(2)
    return F.cross_entropy(clean, y, label_smoothing=cfg.label_smoothing) \
        + cfg.trades_beta * kl_div(adv, clean.softmax(1)).mean()


METHOD = register(Method("trades", "TRADES", "TRADES", robust=True, contrastive=False, attack="pgd",
                         needs=ATTACK_FIELDS + ("trades_beta",) + CE_FIELDS, loss=loss, order=30))
