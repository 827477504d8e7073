"""Supervised contrastive losses with separate anchor and contrast sets (RSupCon, SupCon).

Pure torch. Features are L2-normalised rows; labels are int64 class ids. Everything is vectorised
over anchors (one (Na, Nc) similarity matrix), computed in float32 even under autocast, with the
row maximum subtracted before exp for stability.

Definition (see shared/docs/RSUPCON.md), for an anchor a with excluded set E(a):
    N(a) = C \\ E(a),  P(a) = {p in N(a): y_p = y_a}
    l(a) = -(tau / tau_base) * mean_{p in P(a)} log( exp(z_a.z_p/tau) / sum_{c in N(a)} exp(z_a.z_c/tau) )
    L = mean of l(a) over the anchors that have at least one positive.
"""
from __future__ import annotations

import torch


def _check(anchor: torch.Tensor, anchor_labels: torch.Tensor, contrast: torch.Tensor,
           contrast_labels: torch.Tensor, temperature: float, base_temperature: float,
           exclude: torch.Tensor | None) -> None:
    if anchor.ndim != 2 or contrast.ndim != 2 or anchor.shape[1] != contrast.shape[1]:
        raise ValueError(f"anchor and contrast must be (Na,d) and (Nc,d); got {tuple(anchor.shape)} "
                         f"and {tuple(contrast.shape)}")
    if anchor_labels.shape != (anchor.shape[0],) or contrast_labels.shape != (contrast.shape[0],):
        raise ValueError(f"labels must be (Na,) and (Nc,); got {tuple(anchor_labels.shape)} and "
                         f"{tuple(contrast_labels.shape)}")
    if not temperature > 0 or not base_temperature > 0:
        raise ValueError(f"temperatures must be > 0; got {temperature!r}, {base_temperature!r}")
    if exclude is not None and (exclude.dtype != torch.bool
                                or exclude.shape != (anchor.shape[0], contrast.shape[0])):
        raise ValueError(f"exclude must be a bool (Na,Nc) mask; got {exclude.dtype} "
                         f"{tuple(exclude.shape)}")


def supcon_per_anchor(anchor: torch.Tensor, anchor_labels: torch.Tensor, contrast: torch.Tensor,
                      contrast_labels: torch.Tensor, temperature: float = 0.07,
                      base_temperature: float = 0.07,
                      exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-anchor loss l(a) (Na,) float32 and has_positive (Na,) bool; l(a) = 0 where no positive.

    Arguments as in `supcon_loss`. Each l(a) depends only on anchor a and the contrast set, so the
    vector can be summed by a PGD attack that perturbs the anchors independently.
    """
    _check(anchor, anchor_labels, contrast, contrast_labels, temperature, base_temperature, exclude)
    a, c = anchor.float(), contrast.float()
    logits = a @ c.T / temperature  # (Na, Nc)
    valid = torch.ones_like(logits, dtype=torch.bool) if exclude is None else ~exclude
    # Row max over the compared entries only; constant per row, so it cancels in the ratio.
    row_max = logits.masked_fill(~valid, float("-inf")).amax(dim=1, keepdim=True).detach()
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    logits = logits - row_max
    # A row with something to compare has denominator >= exp(0) = 1; the clamp only keeps a fully
    # excluded row finite (it has no positive and is dropped), so no NaN reaches the gradient.
    # Excluded entries may exceed the row max (e.g. self-similarity), so mask before exp.
    denom = logits.masked_fill(~valid, float("-inf")).exp().sum(dim=1, keepdim=True).clamp_min(1e-30)
    log_prob = logits - denom.log()  # (Na, Nc)
    pos = (anchor_labels[:, None] == contrast_labels[None, :]) & valid
    n_pos = pos.sum(dim=1)
    has_pos = n_pos > 0
    mean_log_prob_pos = (log_prob * pos).sum(dim=1) / n_pos.clamp_min(1)
    return -(temperature / base_temperature) * mean_log_prob_pos * has_pos, has_pos


def supcon_loss(anchor: torch.Tensor, anchor_labels: torch.Tensor, contrast: torch.Tensor,
                contrast_labels: torch.Tensor, temperature: float = 0.07,
                base_temperature: float = 0.07, exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Supervised contrastive loss L_SC(A, C, E), a scalar (float32).

    anchor: (Na, d) and contrast: (Nc, d), L2-normalised rows; anchor_labels (Na,), contrast_labels
    (Nc,) int64. exclude: optional bool (Na, Nc); True removes that pair from both numerator and
    denominator. Anchors without a positive contribute nothing; if no anchor has one the result
    is 0 (still attached to the graph, so backward() works and gives zero gradients).
    With A = C and exclude = identity this is SupCon (Khosla et al. 2020).
    """
    per_anchor, has_pos = supcon_per_anchor(anchor, anchor_labels, contrast, contrast_labels,
                                            temperature, base_temperature, exclude)
    return per_anchor.sum() / has_pos.sum().clamp_min(1)


def rsupcon_terms(z_adv: torch.Tensor, z_base: torch.Tensor, labels: torch.Tensor,
                  temperature: float = 0.07,
                  base_temperature: float = 0.07) -> tuple[torch.Tensor, torch.Tensor]:
    """RSupCon's two training terms (L_adv, L_cln), scalars (float32).

    z_adv: (V, B, d) features of the V adversarial views (view-major: z_adv[v, i] is view v of
    image i); z_base: (B, d) features of the clean base view; labels: (B,) int64.
        L_adv = L_SC(A = adversarial, C = adversarial + base, E(a) = {a})
        L_cln = L_SC(A = base, C = adversarial, E = {})
    """
    if z_adv.ndim != 3 or z_base.ndim != 2 or z_adv.shape[1:] != z_base.shape:
        raise ValueError(f"z_adv must be (V,B,d) and z_base (B,d); got {tuple(z_adv.shape)} and "
                         f"{tuple(z_base.shape)}")
    v, b, d = z_adv.shape
    adv = z_adv.reshape(v * b, d)  # (V*B, d), view-major
    adv_labels = labels.repeat(v)  # (V*B,)
    contrast = torch.cat([adv, z_base])  # (V*B + B, d)
    contrast_labels = torch.cat([adv_labels, labels])
    self_mask = torch.zeros(v * b, v * b + b, dtype=torch.bool, device=adv.device)
    self_mask[:, :v * b].fill_diagonal_(True)
    l_adv = supcon_loss(adv, adv_labels, contrast, contrast_labels, temperature, base_temperature,
                        self_mask)
    l_cln = supcon_loss(z_base, labels, adv, adv_labels, temperature, base_temperature)
    return l_adv, l_cln


def rsupcon_attack_loss(z_adv: torch.Tensor, z_clean: torch.Tensor, labels: torch.Tensor,
                        temperature: float = 0.07, base_temperature: float = 0.07) -> torch.Tensor:
    """The objective the RSupCon attack ascends, per adversarial anchor: (V*B,) float32.

    z_adv: (V, B, d) features of the adversarial views being crafted; z_clean: (Vc, B, d) clean
    features of every view, Vc >= V, whose first V views are the clean sources of z_adv in the
    same order (RSupCon: z_adv = [t~, s~], z_clean = [t, s, b]); labels: (B,). Anchor (v, i) is
    compared with every clean feature except its own source z_clean[v, i]. Row v*B + i of the
    result is anchor (v, i)'s loss; it depends on no other anchor, so summing it is exact for
    a per-example attack.
    """
    if z_adv.ndim != 3 or z_clean.ndim != 3 or z_adv.shape[1:] != z_clean.shape[1:] \
            or z_clean.shape[0] < z_adv.shape[0]:
        raise ValueError(f"z_adv must be (V,B,d) and z_clean (Vc>=V,B,d); got {tuple(z_adv.shape)} "
                         f"and {tuple(z_clean.shape)}")
    v, b, d = z_adv.shape
    vc = z_clean.shape[0]
    exclude = torch.zeros(v * b, vc * b, dtype=torch.bool, device=z_adv.device)
    exclude[:, :v * b].fill_diagonal_(True)  # anchor (v,i) vs its clean source (v,i)
    per_anchor, _ = supcon_per_anchor(z_adv.reshape(v * b, d), labels.repeat(v),
                                      z_clean.reshape(vc * b, d), labels.repeat(vc),
                                      temperature, base_temperature, exclude)
    return per_anchor
