"""SupCon (Khosla et al. 2020): supervised contrastive learning on clean views (not robust), then a
linear probe."""
from __future__ import annotations

from backend.train.registry import CONTRAST_FIELDS, PROBE_FIELDS, Method, register


def loss(nets, x_u8, y, ctx):
    """SupCon on two clean s views (A = C, E(a) = {a})."""
    import torch

    from backend.train.augment import view_s
    from backend.train.losses import supcon_loss

    cfg = ctx.cfg
    x = torch.cat([view_s(x_u8, ctx.gen_aug), view_s(x_u8, ctx.gen_aug)])  # (2B,3,H,W)
    with ctx.autocast():
        z = nets.train(x, "proj")  # (2B, d)
    y2 = y.repeat(2)
    eye = torch.eye(len(y2), dtype=torch.bool, device=z.device)
    return supcon_loss(z, y2, z, y2, cfg.temperature, cfg.base_temperature, eye)


METHOD = register(Method("supcon", "SupCon", "SupCon (contrastive, not robust)", robust=False, contrastive=True,
                         attack=None, needs=CONTRAST_FIELDS + PROBE_FIELDS, loss=loss, order=40))
