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
