"""Attack controls shared by the pages: choose an attack and its parameters, get an AttackSpec dict.

Everything shown comes from the backend's attack registry through Service.limits()["attack"]: the
menu (each interactive attack in each of its norms), labels, help, which parameters have a control,
their ranges, steps and defaults; nothing about a particular attack is written here. Budgets in
"1/255" units are shown in k/255 (the unit papers use); L2 budgets in plain pixel-norm units. The
values are "params" (app.session.state), so they live in the URL and survive page switches; each parameter's
URL name is its registry key. The dict returned is what backend.attacks.AttackSpec.from_dict accepts;
the backend validates it again.
"""
from __future__ import annotations

import math

import streamlit as st

from app.session import home, state
from app.session.client import backend

AUTO = "auto"   # a parameter left to the attack (e.g. PGD's step size 2.5 * eps / steps)
NONE = "none"   # the "no attack" entry of pages that can show clean results only


def attack_limits() -> dict:
    """Service.limits()["attack"] ({} when the backend cannot be asked)."""
    return (backend(quiet=True).limits() or {}).get("attack") or {}


def menu(alim: dict) -> dict[str, tuple[dict, dict]]:
    """{menu key: (attack, variant)} for every interactive attack and norm, in the registry's order."""
    out = {}
    for a in (alim.get("attacks") or {}).values():
        if a.get("interactive", True):
            for v in a["variants"]:
                out[v["key"]] = (a, v)
    return out


def _scale(q: dict) -> float:
    return 255.0 if q.get("unit") == "1/255" else 1.0


def _shown(v: float, scale: float, integral: bool):
    """A value in the control's unit (k/255 for 1/255 params): an int when the control steps in ints."""
    d = round(float(v) * scale, 9)
    return int(round(d)) if integral else d


def _control(where, q: dict, name: str, max_steps: int | None):
    """Draw the control of registry param `q` bound to param `name`; returns the spec value (None = auto)."""
    label, help_ = q["label"], q.get("help") or None
    if q["kind"] == "bool":
        return bool(state.widget(where.checkbox, label, name, bool(q["default"]), help=help_))
    if q["kind"] == "choice":
        return state.widget(where.selectbox, label, name, q["default"], options=list(q["options"]), help=help_)
    scale = _scale(q)
    if q.get("options"):
        opts = ([AUTO] if q["default"] is None else []) + [_shown(o, scale, False) for o in q["options"]]
        default = AUTO if q["default"] is None else _shown(q["default"], scale, False)
        v = state.widget(where.select_slider, label, name, default, options=opts, help=help_)
        return None if v == AUTO else float(v) / scale
    lo, hi = q["offer"]
    if q["name"] == "steps" and max_steps:
        hi = min(hi, max_steps)
    step = q.get("step") or (1 if q["kind"] == "int" else 0.01)
    integral = q["kind"] == "int" or float(round(step * scale, 9)).is_integer()
    lo, hi, step_s = (_shown(x, scale, integral) for x in (lo, hi, step))
    default = min(max(_shown(q["default"], scale, integral), lo), hi)
    kw = dict(lo=lo, hi=hi, min_value=lo, max_value=hi, step=step_s, help=help_)
    if q["name"] == "eps":  # the budget is the page's main knob: a slider
        v = state.widget(where.slider, label, name, default, **kw)
    else:
        if not integral and step_s < 1:
            kw["format"] = f"%.{max(0, -math.floor(math.log10(step_s)))}f"
        v = state.widget(where.number_input, label, name, default, **kw)
    return (int(v) if q["kind"] == "int" else float(v) / scale) if v is not None else None


def _eps_text(q: dict, value: float) -> str:
    scale = _scale(q)
    return f"eps {_shown(value, scale, True)}/255" if scale != 1.0 else f"eps {value:g}"


def controls(class_names: list[str], where=None, prefix: str = "", max_steps: int | None = None, *,
             none_label: str | None = None, targeted: bool = True, default: str | None = None,
             alim: dict | None = None, input_size: int | None = None) -> tuple[dict | None, str]:
    """Draw the attack controls (in `where`, default the current container). Returns (spec dict,
    one-line description). `prefix` separates the params of different pages' controls. none_label:
    offer "no attack" first under this label (then the spec is None). targeted=False hides the
    targeted option. default: the menu key chosen at first (default: the registry's default method,
    else the first entry). max_steps caps the steps controls. alim: limits()["attack"] if at hand.
    input_size: the largest input side of the models attacked; from limits' large_input_px up, a
    param's large_default (fewer steps for ImageNet-size models) is its control's first value."""
    box = where or st
    p = lambda n: prefix + n  # noqa: E731
    alim = attack_limits() if alim is None else alim
    entries = menu(alim)
    if not entries:
        box.warning("The backend lists no attacks.")
        return None, ""
    opts = ([NONE] if none_label else []) + list(entries)
    if default not in opts:
        default = alim.get("default") if alim.get("default") in entries else next(iter(entries))
    label = lambda k: none_label if k == NONE else entries[k][1]["label"]  # noqa: E731
    c1, c2, c3, c4 = box.columns([1.3, 1.2, 1.0, 1.2])
    key = state.widget(c1.selectbox, "Attack", p("attack"), default, options=opts, format_func=label,
                       help="\n\n".join(f"**{v['label']}**: {v['help']}" for _, v in entries.values()))
    if key == NONE:
        return None, none_label
    attack, variant = entries[key]
    norm = variant["norm"]
    spec: dict = {"method": attack["name"], "norm": norm}
    desc = variant["label"]
    steps_text, budget = "", False
    for q in attack["params"]:
        if not q["shown"] or q["norm"] not in (None, norm):
            continue
        col = c2 if q["name"] == "eps" else c3 if q["name"] == "steps" else c4
        q = {**q, "default": home.param_default(q, alim, input_size)}
        v = _control(col, q, p(q["key"] or f"{attack['name']}_{q['name']}"), max_steps)
        if v is not None:
            spec[q["name"]] = v
        if q["name"] == "eps":
            desc, budget = desc + ", " + _eps_text(q, v), True
        elif q["name"] == "steps":
            steps_text = f", {int(v)} steps"
    desc += steps_text
    if not budget and attack.get("minimal"):
        c2.caption("No budget: this attack searches for the smallest perturbation that flips the label.")
    if attack.get("targeted") and targeted:
        on = state.widget(c3.checkbox, "Targeted", p("targeted"), False,
                          help="Push the image toward one chosen class instead of away from its own.")
        if on:
            tgt = state.widget(c3.selectbox, "Target class", p("target"), 0, options=list(range(len(class_names))),
                               format_func=lambda i: class_names[i])
            spec.update(targeted=True, target_class=int(tgt))
            desc += f", targeted -> {class_names[int(tgt)]}"
    return spec, desc


def url_params(prefix: str = "", alim: dict | None = None) -> dict:
    """The attack params currently set (for the page's URL): the menu choice, targeting, and every
    registry parameter's key that this session has a value for."""
    alim = attack_limits() if alim is None else alim
    names = ["attack"]
    for a in (alim.get("attacks") or {}).values():
        names += [q["key"] or f"{a['name']}_{q['name']}" for q in a["params"] if q["shown"]]
    names += ["targeted", "target"]
    ss = st.session_state
    out = {}
    for n in dict.fromkeys(names):
        k = "p_" + prefix + n
        if k in ss and ss[k] is not None:
            out[prefix + n] = ss[k]
    return out


def outcome_headline(results: dict, ids: list[str], label: int | None, target: int | None,
                     class_names: list[str]) -> str:
    """The attack's outcome over the models, counting what a reader takes it to count: targeted, the models
    whose prediction became the target; untargeted with a known true class, the models that were right on
    the clean image and are wrong on the adversarial one (the ones already wrong are named apart, never
    counted as fooled); without a true class (an upload), the models whose top class changed.
    results: Service.attack's {model id: {"clean": {"pred"}, "adv": {"pred"}, "flipped"}}."""
    n = len(ids)
    if target is not None:
        hit = sum(int(results[m]["adv"]["pred"]) == target for m in ids)
        return f"target **{class_names[target]}** reached on **{hit} of {n}** model{'s' if n != 1 else ''}"
    if label is None:
        changed = sum(bool(results[m]["flipped"]) for m in ids)
        return f"prediction changed on **{changed} of {n}** model{'s' if n != 1 else ''} (true class unknown)"
    right = [m for m in ids if int(results[m]["clean"]["pred"]) == label]
    fooled = sum(int(results[m]["adv"]["pred"]) != label for m in right)
    wrong = n - len(right)
    plural = "s" if len(right) != 1 else ""
    text = f"fooled **{fooled} of {len(right)}** model{plural} that were right on the clean image"
    return text + (f"; {wrong} already wrong before the attack" if wrong else "")
