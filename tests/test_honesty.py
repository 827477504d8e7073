"""app.session.honesty: what the app says about its models, from their cards (pure functions)."""
from app.session import honesty


def _card(arch="fastnet", width=64, epochs=15, status="cpu-preview", **kw):
    return {"id": kw.pop("id", "m"), "arch": arch, "width": width, "status": status,
            "training": {"epochs": epochs}, **kw}


def test_preview_text_describes_a_shared_recipe_from_the_cards():
    cards = [_card(id=m) for m in ("ce", "pgd_at")] + [_card(id="x", status="imported", arch="resnet50")]
    assert honesty.preview_text(cards, {"fastnet": "FastNet"}) == "FastNet w64, 15 epochs"
    # without the registry's short names the card's architecture name is used
    assert honesty.preview_text(cards) == "fastnet w64, 15 epochs"
    # epochs from train_config when the card has no training block; no width for a width-less network
    old = {"id": "o", "arch": "vit", "width": None, "status": "cpu-preview", "train_config": {"epochs": 5}}
    assert honesty.preview_text([old]) == "vit, 5 epochs"


def test_preview_text_when_previews_differ_or_are_absent():
    assert honesty.preview_text([_card(id="a"), _card(id="b", epochs=5)]) == "small networks, a few epochs each"
    assert honesty.preview_text([_card(status="shipped")]) == ""
    assert honesty.preview_text([]) == ""


def _lens(p_end, path, steps=60, images=("samples:0", "samples:3")):
    return {"images": list(images), "steps": steps, "budgets": [
        {"norm": "l2", "eps": 6.0, "n": len(images), "p_start": path[0], "p_end": p_end, "path": path},
        {"norm": "linf", "eps": 16 / 255, "n": len(images), "p_start": path[0], "p_end": 0.3, "path": [0.0, 0.3]}]}


def test_lens_measured_text_quotes_the_cards_measurement_per_group():
    robust_of = {"pgd_at": True, "trades": True, "ce": False}
    cards = [_card(id="pgd_at", method="pgd_at", lens_measured=_lens(0.99, [0.0, 0.2, 0.6, 0.99])),
             _card(id="trades", method="trades", lens_measured=_lens(0.87, [0.0, 0.1, 0.3, 0.55, 0.87])),
             _card(id="ce", method="ce", lens_measured=_lens(1.0, [0.0, 1.0]))]
    text = honesty.lens_measured_text(cards, robust_of, "l2", 6.0, where="at L2 eps 6")
    assert text == ("Measured at L2 eps 6 (2 sample images, each pushed toward its next class, 60 steps; "
                    "scripts/lens_budget.py): "
                    "the 2 adversarially trained models reach a mean target probability of 0.87-0.99, passing 0.5 "
                    "after 2-3 steps; the standard one reaches 1.00, passing 0.5 after 1 step.")
    assert "staying below 0.5" in honesty.lens_measured_text(cards[:1], robust_of, "linf", 16 / 255)
    # a budget nobody measured, or cards without a measurement: nothing to say
    assert honesty.lens_measured_text(cards, robust_of, "l2", 4.0) == ""
    assert honesty.lens_measured_text([_card(id="x")], robust_of, "l2", 6.0) == ""
    # an imported model is its own group; unmeasured models shown beside measured ones are counted
    imported = _card(id="rb", method="imported", lens_measured=_lens(0.5, [0.0, 0.5]))
    text = honesty.lens_measured_text([cards[0], imported, _card(id="y")], robust_of, "l2", 6.0)
    assert text.startswith("Measured on 2 of the 3 models (")
    assert "the adversarially trained one reaches a mean target probability of 0.99" in text
    assert "the other one reaches 0.50, passing 0.5 after 1 step" in text
    # measurements on other images or step counts are not mixed into one sentence
    other = _card(id="ce", method="ce", lens_measured=_lens(1.0, [0.0, 1.0], steps=30))
    assert "standard" not in honesty.lens_measured_text([cards[0], other], robust_of, "l2", 6.0)


def test_budget_label_writes_l_inf_in_k_over_255_and_l2_in_pixel_units():
    assert honesty.budget_label("l2", 6.0) == "L2 eps 6"
    assert honesty.budget_label("l2", 0.5) == "L2 eps 0.5"
    assert honesty.budget_label("linf", 16 / 255) == "L-inf eps 16/255"
    assert honesty.budget_label("linf", 8 / 255, word="") == "L-inf 8/255"
    assert honesty.budget_label("l2", 2, word="") == "L2 2"
