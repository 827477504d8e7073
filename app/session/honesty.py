"""What the app says about its models and which sample it opens on (pure: no Streamlit).

Model labels: every place that picks or shows a model says what was measured on it (clean and
robust test accuracy from the model card) and its status ("cpu-preview": small models trained on a
CPU, not the paper's networks), so a viewer never mistakes a 48 % model for a finished one.

The default sample's rule is app.session.home's (default_sample).
"""
from __future__ import annotations

ROBUST_KEYS = (("autoattack", "AutoAttack"), ("pgd20", "PGD-20"))


def _pct(v) -> str:
    return f"{float(v) * 100:.0f}%"


def accuracy_text(card: dict) -> str:
    """'clean 48% · AutoAttack 20%' from the card's test metrics ('' when nothing was measured)."""
    m = card.get("metrics") or {}
    parts = []
    if m.get("clean") is not None:
        parts.append(f"clean {_pct(m['clean'])}")
    for key, name in ROBUST_KEYS:
        if m.get(key) is not None:
            parts.append(f"{name} {_pct(m[key])}")
            break
    return " · ".join(parts)


def status_text(card: dict) -> str:
    return str(card.get("status") or "")


def model_line(card: dict) -> str:
    """One line under a model's name: measured accuracy and status, e.g.
    'clean 48% · AutoAttack 20% · cpu-preview' (or 'not evaluated · test')."""
    acc = accuracy_text(card) or "not evaluated"
    st = status_text(card)
    return acc + (f" · {st}" if st else "")


def picker_label(card: dict) -> str:
    """Short label for a model chip in a picker: 'RSupCon w16 (5 ep) · 48/20% · cpu-preview'."""
    name = card.get("display_name") or card["id"]
    m = card.get("metrics") or {}
    rob = next((m[k] for k, _ in ROBUST_KEYS if m.get(k) is not None), None)
    acc = ""
    if m.get("clean") is not None:
        acc = f"{float(m['clean']) * 100:.0f}" + (f"/{float(rob) * 100:.0f}%" if rob is not None else "%")
    st = status_text(card)
    return " · ".join(p for p in (name, acc, st) if p)


def _epochs(card: dict) -> int | None:
    for part in ("training", "train_config"):
        e = (card.get(part) or {}).get("epochs")
        if e is not None:
            return int(e)
    return None


def preview_text(cards: list[dict], short_names: dict[str, str] | None = None) -> str:
    """What the cpu-preview models among `cards` are, read from their cards, for captions: 'FastNet w64,
    15 epochs' when they share network, width and epochs (as the shipped zoo does), 'small networks,
    a few epochs each' when they differ, '' when there is none. short_names: architecture name -> its
    short name (capabilities()["architectures"][name]["short"]); the registry name otherwise."""
    previews = [c for c in cards if c.get("status") == "cpu-preview"]
    if not previews:
        return ""
    kinds = {(c.get("arch"), c.get("width"), _epochs(c)) for c in previews}
    if len(kinds) > 1:
        return "small networks, a few epochs each"
    arch, width, epochs = kinds.pop()
    name = (short_names or {}).get(str(arch)) or str(arch)
    return f"{name}{f' w{width}' if width else ''}" + (f", {epochs} epochs" if epochs else "")


def budget_label(norm: str, eps: float, word: str = "eps ") -> str:
    """A lens or attack budget as captions and tables write it: ('l2', 6.0) -> 'L2 eps 6', ('linf', 16/255) ->
    'L-inf eps 16/255' (L-inf in k/255, L2 in pixel units); word='' gives the table's 'L2 6', 'L-inf 16/255'."""
    return f"L2 {word}{float(eps):g}" if norm == "l2" else f"L-inf {word}{round(float(eps) * 255)}/255"


def _lens_record(card: dict, norm: str, eps: float) -> tuple[dict, dict] | None:
    """(the card's lens measurement, its entry for this budget) or None (scripts/lens_budget.py --card)."""
    rec = card.get("lens_measured") or {}
    for b in rec.get("budgets") or []:
        if b.get("norm") == norm and abs(float(b.get("eps", -1)) - float(eps)) <= 1e-6 and b.get("path"):
            return rec, b
    return None


def _span(values: list[float], fmt: str) -> str:
    lo, hi = format(min(values), fmt), format(max(values), fmt)
    return lo if lo == hi else f"{lo}-{hi}"


def lens_measured_text(cards: list[dict], robust_of: dict, norm: str, eps: float, where: str = "") -> str:
    """What the Feature lens did to these models at this budget, as measured by scripts/lens_budget.py
    and recorded in their cards: 'Measured at L2 eps 6 (4 sample images, each pushed toward its next
    class, 60 steps; ...): the 3 adversarially trained models reach a mean target probability of
    0.87-0.99, passing 0.5 after 14-20 steps; the 2 standard models reach 1.00, passing 0.5 after 2
    steps.' ('at L2 eps 6' is `where`); '' when no card has this budget. robust_of: training method ->
    adversarially trained (capabilities()["jobs"]["method_robust"])."""
    found = [(c, *r) for c in cards if (r := _lens_record(c, norm, eps))]
    if not found:
        return ""
    first = found[0][1]
    same = [(c, b) for c, rec, b in found if (rec.get("images"), rec.get("steps")) ==
            (first.get("images"), first.get("steps"))]
    groups = {True: ("adversarially trained", []), False: ("standard", []), None: ("other", [])}
    for c, b in same:
        groups[robust_of.get(str(c.get("method")))][1].append(b)  # None: not a training method here
    parts = []
    for label, entries in groups.values():
        if not entries:
            continue
        who = f"the {label} one" if len(entries) == 1 else f"the {len(entries)} {label} models"
        reach = _span([float(b["p_end"]) for b in entries], ".2f")
        passed = [next((i for i, p in enumerate(b["path"]) if p >= 0.5), None) for b in entries]
        if all(s is not None for s in passed):
            span = _span([float(s) for s in passed if s is not None], ".0f")
            when = f"passing 0.5 after {span} step{'' if span == '1' else 's'}"
        elif any(s is not None for s in passed):
            when = "some passing 0.5, some not"
        else:
            when = "staying below 0.5"
        verb = "reaches" if len(entries) == 1 else "reach"
        parts.append(f"{who} {verb} " + (f"a mean target probability of {reach}, {when}" if not parts
                                         else f"{reach}, {when}"))
    n, steps = len(first.get("images") or []), first.get("steps")
    scope = "" if len(same) == len(cards) else f" on {len(same)} of the {len(cards)} models"
    at = f" {where}" if where else ""
    return (f"Measured{scope}{at} ({n} sample image{'s' if n != 1 else ''}, each pushed toward its next class, "
            f"{steps} steps; scripts/lens_budget.py): " + "; ".join(parts) + ".")
