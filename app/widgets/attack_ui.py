"""Attack controls shared by the pages: choose an attack and its parameters, get an AttackSpec dict.

L-inf budgets are shown in k/255 (the unit papers use); L2 budgets in plain pixel-norm units. The
values are "params" (app.state), so they live in the URL and survive page switches. The dict
returned is what backend.attacks.AttackSpec.from_dict accepts; the backend validates it again.
"""
from __future__ import annotations

import streamlit as st

from app.session import state

# key -> (label, spec method, norm)
ATTACKS = {
    "fgsm": ("FGSM (one step, L-inf)", "fgsm", "linf"),
    "pgd": ("PGD, L-inf", "pgd", "linf"),
    "pgd-l2": ("PGD, L2", "pgd", "l2"),
    "cw": ("Carlini-Wagner (L2, minimal)", "cw", "l2"),
    "deepfool": ("DeepFool (L2, minimal)", "deepfool", "l2"),
}
HELP = {
    "fgsm": "One signed-gradient step of size eps: the fastest attack, and the weakest.",
    "pgd": "Projected gradient descent: many small signed steps, each projected back into the eps-box.",
    "pgd-l2": "PGD in the L2 ball: steps along the normalised gradient; eps is the Euclidean budget.",
    "cw": "Finds a small L2 perturbation with Adam on a margin loss; no budget, it reports the norm it needed.",
    "deepfool": "Walks to the nearest linearised decision boundary; reports the L2 norm it needed.",
}
LINF_STEPS = ["auto", 0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0, 8.0]  # k/255
L2_STEPS = ["auto", 0.01, 0.02, 0.05, 0.1, 0.2, 0.5]
CW_C = [0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0]


def controls(class_names: list[str], where=None, prefix: str = "", max_steps: int = 100) -> tuple[dict, str]:
    """Draw the attack controls (in `where`, default the current container). Returns (spec dict,
    one-line description). `prefix` separates the params of different pages' controls."""
    box = where or st
    p = lambda n: prefix + n  # noqa: E731
    c1, c2, c3, c4 = box.columns([1.3, 1.2, 1.0, 1.2])
    key = state.widget(c1.selectbox, "Attack", p("attack"), "pgd", options=list(ATTACKS),
                       format_func=lambda k: ATTACKS[k][0], help="\n\n".join(
                           f"**{ATTACKS[k][0]}**: {HELP[k]}" for k in ATTACKS))
    _, method, norm = ATTACKS[key]
    spec: dict = {"method": method, "norm": norm}
    if norm == "linf":
        eps_k = state.widget(c2.slider, "eps (k/255)", p("eps"), 8, lo=0, hi=32, min_value=0, max_value=32,
                             step=1, help="L-inf budget: no pixel moves by more than k/255.")
        spec["eps"] = float(eps_k) / 255.0
        desc = f"{ATTACKS[key][0]}, eps {eps_k}/255"
    elif method == "pgd":
        eps2 = state.widget(c2.slider, "eps (L2)", p("eps2"), 0.5, lo=0.0, hi=3.0, min_value=0.0,
                            max_value=3.0, step=0.05, help="L2 budget of the whole perturbation (0..1 pixels).")
        spec["eps"] = float(eps2)
        desc = f"{ATTACKS[key][0]}, eps {eps2:g}"
    else:
        spec["eps"] = 0.0  # minimal-perturbation attacks: unbounded, the norm they need is the result
        desc = ATTACKS[key][0]
        c2.caption("No budget: this attack searches for the smallest perturbation that flips the label.")
    if method == "fgsm":
        spec["steps"] = 1
    else:
        default = {"pgd": 10, "cw": 50, "deepfool": 30}[method]
        steps = state.widget(c3.number_input, "Steps", p(f"steps_{method}"), default, lo=1, hi=max_steps,
                             min_value=1, max_value=max_steps, step=1)
        spec["steps"] = int(steps)
        desc += f", {int(steps)} steps"
    if method == "pgd":
        opts = LINF_STEPS if norm == "linf" else L2_STEPS
        step = state.widget(c4.select_slider, "Step size" + (" (k/255)" if norm == "linf" else ""),
                            p(f"step_{norm}"), "auto", options=opts,
                            help="auto = 2.5 * eps / steps, enough to cross the whole ball.")
        if step != "auto":
            spec["step_size"] = float(step) / (255.0 if norm == "linf" else 1.0)
        rs = state.widget(c4.checkbox, "Random start", p("rs"), True,
                          help="Start from a random point in the eps-ball instead of the image itself.")
        spec["random_start"] = bool(rs) and spec["eps"] > 0
    elif method == "cw":
        c = state.widget(c4.select_slider, "c (trade-off)", p("cw_c"), 1.0, options=CW_C,
                         help="Weight of the misclassification term against the L2 size.")
        kappa = state.widget(c4.number_input, "kappa (confidence)", p("cw_kappa"), 0.0, lo=0.0, hi=50.0,
                             min_value=0.0, max_value=50.0, step=1.0)
        spec.update(c=float(c), kappa=float(kappa), lr=0.01)
    elif method == "deepfool":
        ov = state.widget(c4.number_input, "Overshoot", p("df_overshoot"), 0.02, lo=0.0, hi=1.0,
                          min_value=0.0, max_value=1.0, step=0.01, format="%.2f")
        spec["overshoot"] = float(ov)
    if method in ("fgsm", "pgd", "cw"):
        targeted = state.widget(c3.checkbox, "Targeted", p("targeted"), False,
                                help="Push the image toward one chosen class instead of away from its own.")
        if targeted:
            tgt = state.widget(c3.selectbox, "Target class", p("target"), 0, options=list(range(len(class_names))),
                               format_func=lambda i: class_names[i])
            spec.update(targeted=True, target_class=int(tgt))
            desc += f", targeted -> {class_names[int(tgt)]}"
    return spec, desc


def url_params(prefix: str = "") -> dict:
    """The attack params currently set (for the page's URL)."""
    names = ("attack", "eps", "eps2", "steps_pgd", "steps_cw", "steps_deepfool", "step_linf", "step_l2", "rs",
             "cw_c", "cw_kappa", "df_overshoot", "targeted", "target")
    ss = st.session_state
    out = {}
    for n in names:
        k = "p_" + prefix + n
        if k in ss and ss[k] is not None:
            out[prefix + n] = ss[k]
    return out
