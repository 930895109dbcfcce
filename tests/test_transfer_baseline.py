"""Transfer tables test every row against a named baseline recipe (``scratch`` by default), show
its row first and name it in the footnote; hand-made records, no training."""

from __future__ import annotations

import pytest
from handmade import record, run, write_run_dir

from bench.errors import UserError
from bench.transfer.leaderboard import transfer_tables

# Per trial, target_test accuracy: finetune is 10 points above scratch in every trial (a
# significant paired difference), linear_probe 1 point below or above (not significant).
ACCURACY = {"scratch": 0.60, "finetune": 0.70, "linear_probe": 0.60}
JITTER = (0.00, 0.02, -0.01, 0.01)


@pytest.fixture
def output_dir(tmp_path):
    for recipe, acc in ACCURACY.items():
        for trial, jitter in enumerate(JITTER):
            wobble = 0.01 * (-1) ** trial if recipe == "linear_probe" else 0.0
            value = round(acc + jitter + wobble, 4)
            accs = {"target": (0.9, 0.8), "target_test": (value, None)}
            recs = [record(step, accs) for step in (0, 5, 9)]  # complete: steps 10, every 5
            write_run_dir(tmp_path, run(recipe, ("target_test",), trial, 0, recs, dataset="task"))
    return tmp_path


def _rows(text: str) -> dict[str, str]:
    """The per-task table's rows by label, in order."""
    table = text.split("task — last")[1].splitlines()[3:6]
    return {line.split()[0]: line for line in table}


def test_scratch_is_the_first_row_and_the_footnote_names_it(output_dir):
    text = transfer_tables(output_dir, ["last"])
    rows = _rows(text)
    assert list(rows) == ["scratch", "finetune", "linear_probe"]
    assert "paired t-test vs the baseline `scratch`" in text and "vs ERM" not in text
    assert " *" in rows["finetune"] and " *" not in rows["linear_probe"]


def test_another_baseline_is_chosen_by_name(output_dir):
    text = transfer_tables(output_dir, ["last"], baseline="linear_probe")
    assert list(_rows(text)) == ["linear_probe", "finetune", "scratch"]
    assert "paired t-test vs the baseline `linear_probe`" in text


@pytest.mark.parametrize(
    "baseline, message",
    [
        ("scrach", "unknown baseline recipe 'scrach'. Did you mean scratch?"),
        ("lp_ft", "baseline recipe 'lp_ft': no runs among these results"),
    ],
)
def test_a_baseline_that_is_no_recipe_or_has_no_runs_is_one_line(output_dir, baseline, message):
    with pytest.raises(UserError) as err:
        transfer_tables(output_dir, ["last"], baseline=baseline)
    assert message in str(err.value) and "\n" not in str(err.value)
