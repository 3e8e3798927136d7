"""The card of the `make demo` student, rendered from fixed facts, must read exactly as the stored snapshot: a change
to the card's wording or layout shows up here, on purpose (regenerate with `KD_HF_UPDATE_SNAPSHOTS=1`)."""

import json
import os
from pathlib import Path

from kd_hf.card import render_card


SNAPSHOTS = Path(__file__).with_name("snapshots")


def test_the_card_reads_as_its_snapshot():
    facts = json.loads((SNAPSHOTS / "card_facts.json").read_text(encoding="utf-8"))
    card = str(render_card(facts, "outputs/minilm-rotten-tomatoes-student"))
    snapshot = SNAPSHOTS / "card.md"
    if os.environ.get("KD_HF_UPDATE_SNAPSHOTS"):
        snapshot.write_text(card, encoding="utf-8")
    assert card == snapshot.read_text(encoding="utf-8")
