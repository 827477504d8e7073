"""The README's generators: scripts/results_table.py (table from cards), scripts/saliency_summary.py
(saliency measures) and scripts/make_figure.py (the figure), on tiny seeded models."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.core.checkpoints import CARD, write_card
from tests.helpers import fresh_checkpoint_root, write_tiny_models  # noqa: F401 (fixture)

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"scripts_{name}", SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_results_table_prints_what_the_cards_say(fresh_checkpoint_root, capsys):  # noqa: F811
    rt = _load("results_table")
    d = fresh_checkpoint_root / "tiny-pgd"
    card = json.loads((d / CARD).read_text())
    card["metrics"] = {"clean": 0.5612, "n_clean": 10000, "pgd20": 0.3065, "n_pgd20": 2000,
                       "autoattack": 0.285, "n_autoattack": 200}
    card["training"] = {"time_s": 1746.0, "hardware": "some CPU", "epochs": 5, "n_train": 49000}
    card["train_config"] = {"attack_steps": 3, "step_size": 3 / 255}
    write_card(d, card)
    assert rt.main(["--checkpoints", str(fresh_checkpoint_root)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 + 3 + 2 and lines[-2] == ""  # header, rule, a row per model; a blank line, the total
    assert lines[-1].startswith("Training core-hours: not measured on these 3 cards")
    assert lines[2].startswith("| rsupcon ")  # registry order: rsupcon first
    row = next(line for line in lines if line.startswith("| pgd_at "))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:9] == ["5 x 49,000", "PGD-3, step 3/255", "56.1", "30.6", "28.5 ± 3.2", "10000 / 2000 / 200",
                          "torchattacks"]  # a card without autoattack_impl predates the reference package
    assert cells[1] == "ResNet-18 w16" and cells[-3:] == ["some CPU", "29 min", "-"]  # no cpu_s: no core-hours
    card["metrics"].update(se_autoattack=0.02, eval={"autoattack_impl": "pyautoattack 0.2.0"},
                           mca=0.6124, corruptions={"n": 1000, "variant": "regenerated: backend.core.corruptions"},
                           mauroc=0.7134, ood={"sets": {"blobs": {}, "uniform-noise": {}, "mnist-samples": {}}})
    write_card(d, card)
    assert rt.main(["--checkpoints", str(fresh_checkpoint_root)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| pgd_at "))
    assert "| 28.5 ± 2.0 | 10000 / 2000 / 200 | reference | 61.2 (1,000, regen.) | 71.3 (3 sets) |" in row
    card["metrics"]["corruptions"]["variant"] = "official: CIFAR-10-C (.npy folder)"
    write_card(d, card)
    assert rt.main(["--checkpoints", str(fresh_checkpoint_root)]) == 0
    assert "| 61.2 (1,000, official) |" in capsys.readouterr().out
    card["training"]["cpu_s"] = 7200.0  # measured on one card: the total sums what is measured, names the rest
    write_card(d, card)
    assert rt.main(["--checkpoints", str(fresh_checkpoint_root)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == "Training, 1 of 3 models: 2.00 core-hours measured (no measurement: rsupcon, ce)."
    # a card without measurements prints dashes, never invented numbers
    ce = next(line for line in lines if line.startswith("| ce "))
    assert "| none | - | - | - |" in ce and "| - / - / - | - | - | - |" in ce and "0 x ?" in ce


def test_saliency_summary_measures_are_in_range_and_deterministic():
    ss = _load("saliency_summary")
    torch.manual_seed(0)
    from backend.core.models import build_model, freeze

    model = build_model("resnet18", width=16, num_classes=10)
    model.train()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():  # move batch-norm statistics off their defaults so outputs depend on the input
        for _ in range(3):
            model(torch.rand(16, 3, 32, 32, generator=g))
    model = freeze(model)
    x, y = torch.rand(6, 3, 32, 32, generator=g), torch.randint(0, 10, (6,), generator=g)
    a = ss.summarise(model, x, y, seed=0, steps=2, ig_steps=4, batch=4)  # two batches
    b = ss.summarise(model, x, y, seed=0, steps=2, ig_steps=4, batch=6)
    assert set(a) == set(ss.COLUMNS)
    for c in ss.COLUMNS:
        assert a[c].shape == (6,)
        np.testing.assert_allclose(a[c], b[c], atol=1e-4, err_msg=c)  # batching does not change results
    for c in ("alignment", "deletion_auc", "insertion_auc", "drift_top10"):
        assert ((a[c] >= 0) & (a[c] <= 1)).all(), c
    np.testing.assert_allclose(a["ins_minus_del"], a["insertion_auc"] - a["deletion_auc"], atol=1e-6)
    fin = a["drift_spearman"][np.isfinite(a["drift_spearman"])]
    assert ((fin >= -1) & (fin <= 1)).all()
    # a zero-step, zero-radius attack leaves the image alone: its map equals the clean one
    same = ss.summarise(model, x, y, seed=0, eps=0.0, steps=0, ig_steps=4)
    np.testing.assert_allclose(same["drift_top10"], 1.0)
    text = ss.table([("tiny (w16)", a)])
    assert text.count("\n") == 2 and "| tiny (w16) | 6 |" in text and "±" in text


@pytest.mark.parametrize("bad", ["--n=1", "--n=0"])
def test_saliency_summary_rejects_bad_n(bad, tmp_path):
    ss = _load("saliency_summary")
    with pytest.raises(SystemExit) as e:
        ss.main([bad, "--checkpoints", str(tmp_path)])
    assert e.value.code == 2


def test_make_figure_writes_a_png_from_the_offline_samples(tmp_path):
    pytest.importorskip("foolbox")
    mf = _load("make_figure")
    root = tmp_path / "checkpoints"
    write_tiny_models(root)
    out = tmp_path / "fig.png"
    assert mf.main(["--out", str(out), "--images", "samples:0", "--checkpoints", str(root),
                    "--method", "gradcam", "--steps", "2", "--px", "48"]) == 0
    from PIL import Image

    with Image.open(out) as im:
        fmt, (w, h) = im.format, im.size
    assert fmt == "PNG" and w > 4 * 48 and h > 2 * 48  # image column + 3 models; clean + adversarial rows


def test_sample_accuracy_counts_each_model_on_the_offline_samples(fresh_checkpoint_root, capsys):  # noqa: F811
    sa = _load("sample_accuracy")
    from backend.core.data import sample_images

    y = sample_images("cifar10").labels
    pred, conf, labels = sa.sample_predictions(fresh_checkpoint_root / "tiny-ce")
    assert torch.equal(labels, y) and pred.shape == conf.shape == (20,) and bool(((conf > 0) & (conf <= 1)).all())
    assert sa.main(["--checkpoints", str(fresh_checkpoint_root)]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {ln.split()[0]: ln for ln in out[1:4]}
    assert set(rows) == {"tiny-ce", "tiny-pgd", "tiny-rsupcon"}
    assert f"{int((pred == y).sum())} / 20" in rows["tiny-ce"]
    assert len([ln for ln in out if ln[:1].isdigit()]) == 20  # the per-image grid


def test_zoo_install_refuses_an_incomplete_zoo_and_changes_nothing(fresh_checkpoint_root, tmp_path, capsys):  # noqa: F811
    """scripts/zoo_install.py installs only when every model has all its numbers and its reference map: one
    missing piece names it, exits 2, and leaves the checkpoints folder as it was."""
    zi = _load("zoo_install")
    out = tmp_path / "zoo"
    out.mkdir()
    import shutil

    shutil.copytree(fresh_checkpoint_root / "tiny-ce", out / "ce")  # trained, never evaluated
    target = tmp_path / "checkpoints"
    (target / "ce").mkdir(parents=True)
    (target / "ce" / "keep.txt").write_text("the model installed before")
    assert zi.main([str(out), "--methods", "ce", "pgd_at", "--checkpoints", str(target)]) == 2
    err = capsys.readouterr().err
    assert "nothing installed" in err and "ce: metrics.clean" in err and "reference_embedding" in err
    assert "pgd_at: not trained" in err
    assert [p.name for p in (target / "ce").iterdir()] == ["keep.txt"]


def test_zoo_install_notes_name_the_options_beyond_the_papers_recipe():
    """The installed card's notes say when a model was trained with label smoothing or a weight EMA (options the
    paper's recipe does not use), and say nothing of them when they were off."""
    zi = _load("zoo_install")
    metrics = {"n_clean": 10000, "n_pgd20": 2000, "n_autoattack": 1000, "n_mca": 1000, "n_ood_in": 1000,
               "ood": {"sets": {"svhn": {}, "noise": {}}}}
    card = {"arch": "fastnet", "width": 64, "method": "ce", "status": "cpu-preview", "data_variant": "cifar10",
            "metrics": metrics, "training": {"epochs": 15, "n_train": 49000, "hardware": "2-core CPU"},
            "train_config": {"lr": 0.1, "schedule": "cosine", "label_smoothing": 0.0, "ema": 0.0}}
    plain = zi.notes(card, 2000)
    assert "label smoothing" not in plain and "EMA" not in plain
    assert "FastNet" in plain and "width 64, 15 epochs x 49,000 images" in plain and "against 2 outlier sets" in plain
    card["train_config"].update(label_smoothing=0.2, ema=0.999)
    extra = zi.notes(card, 2000)
    assert "with label smoothing 0.2, a moving average of the weights (EMA 0.999); training attack: none" in extra


def test_zoo_status_reads_the_runs_and_changes_nothing(tmp_path, capsys):
    """scripts/zoo_status.py (train_zoo.sh status): a trained model's epochs, core-hours and metrics, AutoAttack's
    running figure from the chunks written after its weights (an older folder, from earlier weights, is not
    counted), a run in progress with its pace and remainder, a method not started; exit 3 until all are done."""
    import os

    from tests.helpers import write_tiny_checkpoint

    zs = _load("zoo_status")
    out, state = tmp_path / "zoo", tmp_path / "zoo" / "runs"
    d = write_tiny_checkpoint(out, "pgd_at", method="pgd_at")
    card = json.loads((d / CARD).read_text())
    card["training"] = {"epochs": 15, "cpu_s": 7200.0}
    card["metrics"] = {"clean": 0.7313, "pgd20": 0.3845}
    write_card(d, card)
    os.utime(d / "model.safetensors", (1_000_000, 1_000_000))
    for name, robust, when in (("pgd_at-new", [True] * 7 + [False] * 13, None), ("pgd_at-old", [True] * 20, 1_000)):
        (state / "aa" / name).mkdir(parents=True)
        chunk = state / "aa" / name / "chunk-0000.json"
        chunk.write_text(json.dumps({"labels": list(range(20)), "robust": robust, "time_s": 1500.0}))
        if when:
            os.utime(chunk, (when, when))
    (state / "aa" / "pgd_at-new" / "chunk-0001.claim").write_text("{}")  # a worker measures the next chunk
    (state / "trades").mkdir(parents=True)
    (state / "trades" / "state.json").write_text(json.dumps({
        "epoch": 3, "step_in_epoch": 50, "global_step": 350, "cpu_s": 3600.0, "phase": "train",
        "config": {"epochs": 15}, "history": [{"epoch": 3, "val_clean": 0.58, "val_robust": 0.245}]}))
    (state / "rsupcon").mkdir(parents=True)  # in its first epoch: the steps per epoch, so the pace, not known yet
    (state / "rsupcon" / "state.json").write_text(json.dumps({
        "epoch": 0, "step_in_epoch": 40, "global_step": 40, "cpu_s": 360.0, "phase": "train",
        "config": {"epochs": 15}, "history": [{"epoch": 0, "val_clean": 0.31, "val_robust": None}]}))
    before = sorted((p, p.stat().st_mtime) for p in tmp_path.rglob("*"))
    assert zs.main([str(out), "--methods", "pgd_at", "trades", "supcon", "rsupcon", "--n-aa", "100"]) == 3
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == ("pgd_at   trained (15 epochs, 2.00 core-h); clean 73.1, PGD-20 38.5, AA - (20 of 100 images "
                        "attacked, 35.0% robust so far; 25 min per chunk; 1 chunk being measured), mCA -, mAUROC -, "
                        "reference map no")
    # 3 epochs of 100 steps and 50 more steps took 1 core-hour: 11.5 epochs to go take about 3.3 more
    assert lines[1] == ("trades   training: epoch 3 of 15 done (+50 steps); last val 58.0 / 24.5; 1.00 core-h so far, "
                        "about 3.3 more at this pace")
    assert lines[2] == "supcon   not started"
    assert lines[3] == "rsupcon  training: epoch 0 of 15 done (+40 steps); last val 31.0 / -; 0.10 core-h so far"
    assert lines[4].startswith("training so far: 3.10 core-hours; about 3.3 more")
    assert sorted((p, p.stat().st_mtime) for p in tmp_path.rglob("*")) == before  # it only reads
    card["metrics"].update(autoattack=0.35, n_autoattack=1000, mca=0.6, mauroc=0.7)
    write_card(d, card)
    (d / "reference_embedding.safetensors").write_bytes(b"")
    assert zs.main([str(out), "--methods", "pgd_at"]) == 0  # trained and fully evaluated
    assert "AA 35.0 (N 1000)" in capsys.readouterr().out


def test_lens_budget_records_its_measurement_in_the_cards(fresh_checkpoint_root, capsys):  # noqa: F811
    lb = _load("lens_budget")
    with pytest.raises(SystemExit):
        lb.main(["--budgets", "l1:3"])
    before = {d.name: (d / CARD).read_text() for d in fresh_checkpoint_root.iterdir() if (d / CARD).is_file()}
    lb.main(["--checkpoints", str(fresh_checkpoint_root), "--models", "tiny-ce", "tiny-pgd", "--images", "0", "3",
             "--steps", "3", "--budgets", "l2:6", "linf:16", "--card"])
    out = capsys.readouterr().out
    assert "recorded in the cards of tiny-ce, tiny-pgd" in out
    for mid in ("tiny-ce", "tiny-pgd"):
        rec = json.loads((fresh_checkpoint_root / mid / CARD).read_text())["lens_measured"]
        assert rec["images"] == ["samples:0", "samples:3"] and rec["steps"] == 3
        assert [(b["norm"], round(b["eps"] * 255) if b["norm"] == "linf" else b["eps"]) for b in rec["budgets"]] == \
            [("l2", 6.0), ("linf", 16)]
        assert all(len(b["path"]) == 4 and b["n"] == 2 for b in rec["budgets"])
        assert rec["command"].endswith("--images 0 3 --steps 3 --budgets l2:6 linf:16")
    lb.main(["--checkpoints", str(fresh_checkpoint_root), "--table"])  # measures nothing: prints the cards
    table = capsys.readouterr().out.splitlines()
    assert table[:2] == ["| model | L2 6 | L-inf 16/255 |", "|---|---|---|"] and len(table) == 4
    rec = json.loads((fresh_checkpoint_root / "tiny-pgd" / CARD).read_text())["lens_measured"]["budgets"]
    cells = [f"{b['p_end']:.2f} ({b['hit']}/2)" for b in rec]
    assert table[2] == f"| PGD-AT | {cells[0]} | {cells[1]} |"
    assert table[3].startswith("| CE | ")  # registry order, measured models only
    # the models not measured keep their cards as they were
    after = {d.name: (d / CARD).read_text() for d in fresh_checkpoint_root.iterdir() if (d / CARD).is_file()}
    assert {m for m in before if before[m] != after[m]} == {"tiny-ce", "tiny-pgd"}


def test_the_readme_results_table_is_what_the_shipped_cards_say():
    """README "Results" quotes scripts/results_table.py on checkpoints/: replacing the zoo without re-pasting
    the table (or editing a number by hand) fails here."""
    rt = _load("results_table")
    table = rt.rows(SCRIPTS.parent / "checkpoints")
    readme = (SCRIPTS.parent / "README.md").read_text().splitlines()
    assert table[0] in readme, "README lacks the results table's header"
    start = readme.index(table[0])
    assert readme[start:start + len(table)] == table
    assert not readme[start + len(table)].startswith("|"), "README's table has rows no shipped card has"
    total = rt.total(SCRIPTS.parent / "checkpoints")
    if "core-hours measured" in total:  # cards that measured their training CPU time: README states the sum
        assert total in " ".join(readme), total


def test_the_readme_lens_table_is_what_the_shipped_cards_recorded():
    """README "Feature lens budgets" quotes `scripts/lens_budget.py --table` (the cards' --card measurements)."""
    table = _load("lens_budget").table(SCRIPTS.parent / "checkpoints")
    readme = (SCRIPTS.parent / "README.md").read_text().splitlines()
    if not table:  # a zoo nobody measured: README must not show a lens table
        assert not any(line.startswith("| model | L-inf") or line.startswith("| model | L2") for line in readme)
        return
    assert table[0] in readme, "README lacks the lens table"
    start = readme.index(table[0])
    assert readme[start:start + len(table)] == table and not readme[start + len(table)].startswith("|")


def test_the_readme_first_view_counts_are_what_the_shipped_models_get(capsys):
    """README "The first view" quotes scripts/sample_accuracy.py's summary for checkpoints/."""
    sa = _load("sample_accuracy")
    assert sa.main(["--checkpoints", str(SCRIPTS.parent / "checkpoints")]) == 0
    out = capsys.readouterr().out.split("\n\n")[0].splitlines()  # the summary: a header and a line per model
    readme = (SCRIPTS.parent / "README.md").read_text()
    assert "\n".join("    " + line.rstrip() for line in out) in readme
