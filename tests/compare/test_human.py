"""Human evaluation round trip: export a blinded sheet, fill it with planted preferences (one careful rater, one
noisy rater), ingest it, and get the planted preferences and the agreement numbers back."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from rlhf.compare import human
from rlhf.compare.pairwise import outcome_win_rate
from rlhf.compare.stats import bootstrap_indices
from rlhf.config import HumanExportConfig, HumanRatingsConfig
from rlhf.data.formats import DataError

P, K = 30, 2
ARMS = ["sft", "ppo", "bad"]


def records() -> list[dict]:
    """Replies of three arms: ppo's mention the order, bad's are empty-ish, sft is the reference; a few identical."""
    out = []
    for i in range(P):
        for k in range(K):
            texts = {"sft": f"Hello, we are looking at request {i}.{k}.", "ppo": f"Hello, order {i}.{k} ships today."}
            texts["bad"] = texts["sft"] if i < 3 else f"no {i}"  # the first three prompts: the same reply as sft
            for model, text in texts.items():
                out.append({"model": model, "prompt_index": i, "sample": k, "response": text, "length": len(text)})
    return out


def planted(item: dict) -> str:
    """The careful rater: ppo beats sft, sft beats bad; the choice names the side the better reply is on."""
    better = "ppo" if item["model"] == "ppo" else "sft"
    return "1" if item["model_1"] == better else "2"


@pytest.fixture
def exported(tmp_path):
    counts = human.export_sheet(
        tmp_path / "human",
        records(),
        [f"prompt {i}" for i in range(P)],
        reference="sft",
        arms=ARMS,
        samples_per_prompt=K,
        cfg=HumanExportConfig(items=12, repeats=4),
        seed=7,
    )
    return tmp_path / "human", counts


def fill(sheet, out, choose) -> None:
    with sheet.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    with out.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "choice": choose(row["item"])})


def test_the_sheet_is_blinded_and_the_key_unblinds_it(exported):
    directory, counts = exported
    sheet = (directory / human.SHEET).read_text(encoding="utf-8")
    key = json.loads((directory / human.KEY).read_text())
    form = (directory / human.FORM).read_text(encoding="utf-8")
    assert counts["items"] + counts["identical"] == 2 * 12 and counts["repeats"] == 4
    assert all(pair["model"] == "bad" and pair["prompt_index"] < 3 for pair in key["identical"])  # not shown
    assert len(key["items"]) == counts["items"] + 4
    assert not any(arm in sheet for arm in ARMS) and not any(arm in form for arm in ARMS)
    assert "http" not in form and "<script>" in form and "q01" in form
    sides = [item["model_1"] == item["model"] for item in key["items"]]
    assert 0 < sum(sides) < len(sides)  # the arm is on either side
    repeats = [item for item in key["items"] if item["repeat_of"] is not None]
    by_id = {item["item"]: item for item in key["items"]}
    for item in repeats:
        original = by_id[item["repeat_of"]]
        assert (item["model_1"], item["model_2"]) == (original["model_2"], original["model_1"])  # sides swapped
    order = [item["prompt_index"] for item in key["items"] if item["model"] == "ppo"]
    assert order != sorted(order)  # shuffled


def test_round_trip_reproduces_planted_preferences_and_agreement(exported, tmp_path):
    directory, _ = exported
    key = json.loads((directory / human.KEY).read_text())
    items = {item["item"]: item for item in key["items"]}
    originals = [i for i, item in items.items() if item["repeat_of"] is None]
    flipped = set(sorted(originals)[:5])  # the noisy rater reverses five original items...
    first_repeat = sorted(i for i, item in items.items() if item["repeat_of"] is not None)[0]

    def noisy(item_id: str) -> str:
        if item_id == first_repeat:
            return "tie"  # ...and contradicts themself once on a repeated item
        choice = planted(items[item_id])
        return {"1": "2", "2": "1"}[choice] if item_id in flipped else choice

    fill(directory / human.SHEET, tmp_path / "alice.csv", lambda i: planted(items[i]))
    fill(directory / human.SHEET, tmp_path / "bob.csv", noisy)
    ratings = human.read_ratings(
        HumanRatingsConfig(
            key=str(directory / human.KEY), sheets=[str(tmp_path / "alice.csv"), str(tmp_path / "bob.csv")]
        )
    )
    assert sorted(ratings.choices) == ["alice", "bob"] and ratings.unrated == 0

    outcomes, lengths = human.human_outcomes(ratings, P, K)
    alice = outcomes["ppo"]["sft"][:, :K]  # column block 0: alice (raters sorted)
    assert set(alice[np.isfinite(alice)]) == {1.0} and np.isfinite(alice).sum() == 12
    bad = outcomes["bad"]["sft"][:, :K]
    assert set(bad[np.isfinite(bad)]) <= {0.0, 0.5} and np.isfinite(bad).sum() == 12
    assert (bad == 0.5).sum() == len(key["identical"])  # identical pairs tie, the others are losses
    assert np.array_equal(outcomes["sft"]["ppo"], 1 - outcomes["ppo"]["sft"], equal_nan=True)
    ppo_lengths = lengths["ppo"]["sft"][np.isfinite(lengths["ppo"]["sft"])]
    assert np.all(ppo_lengths == len("Hello, order 0.0 ships today.") - len("Hello, we are looking at request 0.0."))

    flipped_ppo = sum(items[i]["model"] == "ppo" for i in flipped)
    rate = outcome_win_rate(outcomes["ppo"]["sft"], bootstrap_indices(P, 300, np.random.default_rng(0)), 0.95)
    assert rate.rate == pytest.approx((24 - flipped_ppo) / 24) and rate.n_pairs == 24

    found = human.rater_agreement(ratings)
    assert found["raters"]["alice"]["self_consistency"] == 1.0
    # bob contradicts himself on the tied repeat and on repeats of the items he flipped (the repeat is not flipped)
    repeats = [i for i, item in items.items() if item["repeat_of"] is not None]
    steady = [i != first_repeat and items[i]["repeat_of"] not in flipped for i in repeats]
    assert found["raters"]["bob"]["self_consistency"] == pytest.approx(np.mean(steady)) and not all(steady)
    assert found["raters"]["bob"]["repeats"] == 4
    (pair,) = found["pairs"]
    assert pair["items"] == len(originals)
    assert pair["agreement"] == pytest.approx((len(originals) - 5) / len(originals))
    alice_labels = [str(human._verdict(items[i], planted(items[i]))) for i in originals]
    bob_labels = [str(human._verdict(items[i], noisy(i))) for i in originals]
    assert pair["cohen_kappa"] == pytest.approx(human.cohen_kappa(alice_labels, bob_labels))
    assert pair["cohen_kappa"] < 1.0 and found["fleiss_items"] == len(originals)
    assert found["raters"]["alice"]["first_position"] == pytest.approx(
        np.mean([planted(items[i]) == "1" for i in items])
    )


def test_kappas_match_textbook_values():
    # Cohen: 50 items, yes/yes 20, yes/no 5, no/yes 10, no/no 15: p_o = 0.7, p_e = 0.5, kappa = 0.4.
    x = ["y"] * 25 + ["n"] * 25
    y = ["y"] * 20 + ["n"] * 5 + ["y"] * 10 + ["n"] * 15
    assert human.cohen_kappa(x, y) == pytest.approx(0.4)
    # Fleiss (1971) as worked on Wikipedia: 10 items, 14 raters, 5 categories: kappa = 0.210.
    table = [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
    assert human.fleiss_kappa(np.array(table)) == pytest.approx(0.210, abs=5e-4)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"item": "q99", "choice": "1"}, r"row 2, field 'item': 'q99'"),
        ({"item": "q01", "choice": "3"}, r"row 2, field 'choice': '3'"),
    ],
)
def test_a_bad_sheet_names_its_file_row_and_field(exported, tmp_path, row, message):
    directory, _ = exported
    sheet = tmp_path / "filled.csv"
    sheet.write_text(f"item,choice\n{row['item']},{row['choice']}\n", encoding="utf-8")
    with pytest.raises(DataError, match=message):
        human.read_ratings(HumanRatingsConfig(key=str(directory / human.KEY), sheets=[str(sheet)]))


def test_a_key_from_another_run_shape_is_refused(exported, tmp_path):
    directory, _ = exported
    sheet = tmp_path / "empty.csv"
    sheet.write_text("item,choice,rater\nq01,,x\n", encoding="utf-8")
    ratings = human.read_ratings(HumanRatingsConfig(key=str(directory / human.KEY), sheets=[str(sheet)]))
    assert ratings.unrated == 1 and ratings.choices == {}
    with pytest.raises(DataError, match="30 prompts x 2 samples"):
        human.human_outcomes(ratings, P + 1, K)


def test_export_can_be_limited_to_some_arms(tmp_path):
    human.export_sheet(
        tmp_path,
        records(),
        [f"prompt {i}" for i in range(P)],
        reference="sft",
        arms=ARMS,
        samples_per_prompt=K,
        cfg=HumanExportConfig(items=50, repeats=0, models=["ppo"]),
        seed=0,
    )
    key = json.loads((tmp_path / human.KEY).read_text())
    assert {item["model"] for item in key["items"]} == {"ppo"} and len(key["items"]) == P  # every prompt once
    assert sorted(item["prompt_index"] for item in key["items"]) == list(range(P))


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the form's script")
def test_the_forms_download_is_a_sheet_that_ingests(exported, tmp_path):
    """The page's own script, clicked through with node and a minimal DOM, downloads a CSV that ingests."""
    directory, _ = exported
    key = json.loads((directory / human.KEY).read_text())
    items = {item["item"]: item for item in key["items"]}
    wanted = {i: planted(item) for i, item in items.items()}
    blank = sorted(wanted)[0]
    del wanted[blank]  # one item left unrated
    (tmp_path / "choices.json").write_text(json.dumps(wanted))
    driver = Path(__file__).with_name("form_driver.js")
    csv_text = subprocess.run(
        ["node", str(driver), str(directory / human.FORM), str(tmp_path / "choices.json"), "Dana Q"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    (tmp_path / "ratings-Dana_Q.csv").write_text(csv_text, encoding="utf-8")
    ratings = human.read_ratings(
        HumanRatingsConfig(key=str(directory / human.KEY), sheets=[str(tmp_path / "ratings-Dana_Q.csv")])
    )
    assert ratings.choices == {"Dana Q": wanted} and ratings.unrated == 1
