"""Print the README's results table (markdown) from the model cards, so the README says what the
cards say.

    python scripts/results_table.py [--checkpoints checkpoints]

One row per checkpoint, in the registry's order (rsupcon first): method, network (architecture and width),
epochs and training
images, training attack, clean / PGD-20 / AutoAttack accuracy (%) with their N, the AutoAttack
standard error (binomial, in points) and code (reference: pyautoattack; torchattacks: backend.attacks
on torchattacks' components), mCA (%, mean accuracy over 15 corruptions x 5 severities, with the
images per cell and the variant: "regen." for backend.core.corruptions, "official" for a CIFAR-10-C
folder), mAUROC (%, maximum softmax probability, with the number of outlier sets), status,
hardware, training time and core-hours (the trainer's measured CPU time; cards before issue 24 lack
it), and under the table the core-hours of all the listed models together. A metric the card does not have
prints as "-". Numbers measured on other images than the card's own data variant (an imported
model measured on the 20 offline samples: `--source samples`, or on an ImageNet val folder) say
where in the N cell, e.g. "20 / 20 / 20 on imagenet-foolbox-samples".
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from backend.core import archs
from backend.core.checkpoints import list_checkpoints
from backend.eval.evaluate import standard_error
from backend.train.registry import METHOD_INFO, METHODS


def _pct(m: dict, key: str) -> str:
    v = m.get(key)
    return "-" if v is None else f"{100 * v:.1f}"


def _count(v) -> str:
    return f"{v:,}" if isinstance(v, int) else "?"


def _attack(card: dict) -> str:
    cfg = card.get("train_config") or {}
    method = METHOD_INFO.get(card.get("method", ""))
    if method is None or method.attack is None:
        return "none"
    if method.attack == "fgsm":
        return method.label
    step = cfg.get("step_size")
    return f"PGD-{cfg.get('attack_steps')}" + (f", step {step * 255:.3g}/255" if step else "")


def _aa(m: dict) -> tuple[str, str]:
    """(accuracy +- standard error, code) of the card's AutoAttack figure."""
    p, n = m.get("autoattack"), m.get("n_autoattack") or 0
    if p is None or not n:
        return "-", "-"
    se = m.get("se_autoattack")
    se = standard_error(p, n) if se is None else se
    impl = (m.get("eval") or {}).get("autoattack_impl") or "torchattacks"
    return f"{100 * p:.1f} ± {100 * se:.1f}", "reference" if impl.startswith("pyautoattack") else "torchattacks"


def _measured_on(card: dict, m: dict) -> str:
    """' on VARIANT' when the metrics were measured on another data variant than the card's."""
    ev = m.get("eval") or {}
    own = card.get("data_variant")
    variant, aa_variant = ev.get("data_variant"), ev.get("autoattack_data_variant")
    out = f" on {variant}" if variant and variant != own else ""
    if aa_variant and aa_variant != (variant or own) and m.get("n_autoattack"):
        out += f" (AA on {aa_variant})"
    return out


def _mca(m: dict) -> str:
    c = m.get("corruptions") or {}
    if m.get("mca") is None or not c:
        return "-"
    kind = "official" if str(c.get("variant", "")).startswith("official") else "regen."
    return f"{100 * m['mca']:.1f} ({_count(c.get('n'))}, {kind})"


def _mauroc(m: dict) -> str:
    o = m.get("ood") or {}
    if m.get("mauroc") is None or not o:
        return "-"
    return f"{100 * m['mauroc']:.1f} ({len(o.get('sets') or {})} sets)"


def rows(root: Path) -> list[str]:
    out = ["| method | network | epochs x images | training attack | clean | PGD-20 | AutoAttack ± SE "
           "| N (clean / PGD / AA) "
           "| AA code | mCA (N per cell) | mAUROC, MSP | status | hardware | training time | core-hours |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for card in list_checkpoints(root, METHODS):
        m, t = card.get("metrics") or {}, card.get("training") or {}
        n = " / ".join(str(m.get(k, "-")) for k in ("n_clean", "n_pgd20", "n_autoattack")) + _measured_on(card, m)
        minutes = t.get("time_s")
        aa, aa_code = _aa(m)
        out.append(f"| {card['method']} | {_network(card)} | {t.get('epochs', '?')} x {_count(t.get('n_train'))} "
                   f"| {_attack(card)} | {_pct(m, 'clean')} | {_pct(m, 'pgd20')} | {aa} | {n} "
                   f"| {aa_code} | {_mca(m)} | {_mauroc(m)} | {card.get('status')} | {t.get('hardware', '?')} "
                   f"| {'-' if minutes is None else f'{minutes / 60:.0f} min'} | {_core_hours(t)} |")
    return out


def _network(card: dict) -> str:
    """'ResNet-18 w16', 'FastNet w64', or the registry name of another architecture (imported: its name)."""
    arch = card.get("arch") or "?"
    name = (card.get("arch_args") or {}).get("name") if arch in ("torchvision", "timm", "robustbench") else None
    return f"{arch} {name}" if name else archs.network_label(arch, card.get("width"))


def total(root: Path) -> str:
    """One line under the table: the training CPU time of every listed model, summed (the issue's budget for the
    whole zoo is in core-hours), and which models lack a measurement."""
    cards = list_checkpoints(root, METHODS)
    hours = {c["method"]: (c.get("training") or {}).get("cpu_s") for c in cards}
    known = [h for h in hours.values() if h is not None]
    unmeasured = [m for m, h in hours.items() if h is None]
    if not known:
        return f"Training core-hours: not measured on these {len(cards)} cards (issue 24's trainer measures them)."
    line = f"Training, {len(known)} of {len(cards)} models: {sum(known) / 3600:.2f} core-hours measured"
    return line + (f" (no measurement: {', '.join(unmeasured)})" if unmeasured else "") + "."


def _core_hours(t: dict) -> str:
    """CPU time the training took, in core-hours: measured (the card's cpu_s, the process's CPU time, since
    issue 24), else '-' (older cards have only wall time; their thread count is in the hardware cell)."""
    cpu = t.get("cpu_s")
    return "-" if cpu is None else f"{cpu / 3600:.2f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoints", type=Path, default=ROOT / "checkpoints")
    a = ap.parse_args(argv)
    print("\n".join(rows(a.checkpoints)))
    print()
    print(total(a.checkpoints))
    return 0


if __name__ == "__main__":
    sys.exit(main())
