"""`mst compare` on hand-written metrics files whose means and standard deviations are known."""

import json
import statistics

import pytest
from typer.testing import CliRunner

from mstcli.cli import app

runner = CliRunner()

# (method, teacher recorded by eval, direction) -> accuracy per seed
ACCURACIES = {
    ("none", None, "image"): [0.80, 0.82, 0.84],
    ("none", None, "audio"): [0.60, 0.70, 0.65],
    ("kd", "mm", "image"): [0.85, 0.86, 0.90],
    ("kd", "cm", "image"): [0.70, 0.75, 0.80],
    ("kd", "cm", "audio"): [0.71, 0.72, 0.73],
    ("dkd", "cm", "audio"): [0.74, 0.76, 0.78],
    ("mst", "mm+cm", "image"): [0.88, 0.87, 0.86],
    ("mst", "mm+cm", "audio"): [0.70, 0.71, 0.72],
}


def write_metrics(root, method, teacher, direction, seed, accuracy):
    folder = root / f"{direction}-s{seed}" / f"{method}-{teacher or 'alone'}"
    folder.mkdir(parents=True)
    report = {"student": direction, "method": method, "teacher": teacher, "split_group": seed, "seed": seed}
    (folder / "metrics.json").write_text(json.dumps({**report, "accuracy": accuracy, "n_test": 100}))


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "results" / "bench"
    for (method, teacher, direction), values in ACCURACIES.items():
        for seed, accuracy in enumerate(values):
            write_metrics(root, method, teacher, direction, seed, accuracy)
    (root / "notes").mkdir()
    (root / "notes" / "metrics.json").write_text('{"something": "else"}')  # not from mst eval: skipped
    return root


def expected(values):
    percent = [100 * v for v in values]
    return [round(statistics.mean(percent), 2), round(statistics.stdev(percent), 2)]


def test_json_is_the_only_stdout_and_has_mean_and_std_over_seeds(results, tmp_path):
    result = runner.invoke(app, ["compare", str(results), "--out", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    table = json.loads(result.stdout)
    assert table["kd"]["cm"]["image"] == pytest.approx([75.0, 5.0])
    assert table["kd"]["mm"]["image"] == pytest.approx(expected([0.85, 0.86, 0.90]))
    assert table["none"]["-"]["audio"] == pytest.approx([65.0, 5.0])
    assert table["mst"]["mm+cm"]["image"] == pytest.approx([87.0, 1.0])
    assert set(table["kd"]) == {"mm", "cm"} and "audio" not in table["kd"]["mm"]
    for (method, teacher, direction), values in ACCURACIES.items():
        assert table[method][teacher or "-"][direction] == pytest.approx(expected(values))
    assert json.loads((tmp_path / "out" / "compare.json").read_text()) == table
    assert "skipped" in result.stderr and "notes" in result.stderr


def test_markdown_layout_marks_the_best_mean_of_each_column(results, tmp_path):
    result = runner.invoke(app, ["compare", str(results), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "MST-Distill" in result.stdout and "test accuracy" in result.stdout
    lines = (tmp_path / "out" / "compare.md").read_text().split("\n\n")[0].splitlines()  # the first table
    assert lines[0] == "| Method | MM teacher · image | MM teacher · audio | CM teacher · image | CM teacher · audio |"
    rows = {line.split(" | ")[0].lstrip("| "): line.strip("|").split(" | ")[1:] for line in lines[2:] if "|" in line}
    names = list(rows)
    assert names[0] == "Student w/o KD" and names[-1] == "MST-Distill"
    # MM image: KD from the MM teacher and MST-Distill both have 87.00: a tie, both bold; the student alone not
    assert expected([0.85, 0.86, 0.90])[0] == 87.0
    assert rows["KD"][0].strip().startswith("**") and rows["MST-Distill"][0].strip().startswith("**")
    assert rows["Student w/o KD"][0].strip() == "82.00 ± 2.00"
    # CM image: MST-Distill 87.00 is the best, KD 75.00 is not
    assert rows["MST-Distill"][2].strip() == "**87.00 ± 1.00**" and rows["KD"][2].strip() == "75.00 ± 5.00"
    # CM audio: DKD 76.00 beats KD 72.00, MST 71.00 and the student alone 65.00
    assert rows["DKD"][3].strip() == "**76.00 ± 2.00**" and not rows["KD"][3].strip().startswith("**")
    # a method without runs in a column shows a dash; the student alone stands in both groups
    assert rows["DKD"][0].strip() == "–" and rows["Student w/o KD"][1].strip() == rows["Student w/o KD"][3].strip()


def test_paired_differences_of_mst_against_each_method_over_shared_seeds(results, tmp_path):
    result = runner.invoke(app, ["compare", str(results), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    paired = json.loads((tmp_path / "out" / "compare_paired.json").read_text())

    def diffs(method, teacher, direction):
        mine = ACCURACIES[("mst", "mm+cm", direction)]
        theirs = ACCURACIES[(method, teacher, direction)]
        d = [100 * (a - b) for a, b in zip(mine, theirs, strict=True)]
        return [round(statistics.mean(d), 2), round(statistics.stdev(d), 2), 3]

    assert paired["kd"]["cm"]["image"] == pytest.approx([12.0, 6.0, 3])  # 18, 12, 6 points
    assert paired["dkd"]["cm"]["audio"] == pytest.approx([-5.0, 1.0, 3])  # 70-74, 71-76, 72-78
    assert paired["none"]["-"]["audio"] == pytest.approx(diffs("none", None, "audio"))
    assert paired["kd"]["mm"]["image"] == pytest.approx(diffs("kd", "mm", "image"))
    assert "mst" not in paired and "audio" not in paired["kd"]["mm"]
    text = (tmp_path / "out" / "compare.md").read_text()
    assert "| DKD | cm | – | -5.00 ± 1.00 (n=3) |" in text


def test_a_second_file_for_the_same_seed_is_skipped_and_a_missing_folder_is_an_error(results, tmp_path):
    write_metrics(results / "zz-copy", "kd", "cm", "image", 0, 0.10)  # sorts after the first file
    result = runner.invoke(app, ["compare", str(results), "--out", str(tmp_path / "out"), "--json"])
    assert json.loads(result.stdout)["kd"]["cm"]["image"] == pytest.approx([75.0, 5.0])
    assert "already read" in result.stderr
    result = runner.invoke(app, ["compare", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "not found" in result.output


def test_results_whose_teacher_was_at_chance_are_listed_on_screen_and_in_the_markdown(results, tmp_path):
    path = results / "image-s1" / "kd-cm" / "metrics.json"
    data = json.loads(path.read_text())
    data["provenance"] = {"method": {"teacher_check": {"teacher": "cm", "val_accuracy": 0.117, "at_chance": True}}}
    path.write_text(json.dumps(data))
    fine = results / "image-s2" / "kd-cm" / "metrics.json"  # a check that passed is not listed
    data = json.loads(fine.read_text())
    data["provenance"] = {"method": {"teacher_check": {"teacher": "cm", "val_accuracy": 0.7, "at_chance": False}}}
    fine.write_text(json.dumps(data))
    result = runner.invoke(app, ["compare", str(results), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    line = "KD · CM teacher · image · seed 1: the teacher was at chance on validation (11.7 %)"
    assert line in result.stderr
    markdown = (tmp_path / "out" / "compare.md").read_text()
    assert f"- {line}" in markdown and "seed 2" not in markdown and markdown.count("at chance on validation") == 1
    # the number itself still counts: the table is what was measured
    compared = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert compared["kd"]["cm"]["image"] == pytest.approx([75.0, 5.0])


def test_one_seed_shows_the_mean_alone_and_failed_cells_are_listed(tmp_path):
    root = tmp_path / "results" / "bench"
    write_metrics(root, "none", None, "image", 0, 0.7367)
    write_metrics(root, "kd", "cm", "image", 0, 0.7011)
    write_metrics(root, "mst", "mm+cm", "image", 0, 0.7500)
    failed = root / "image-s0" / "rkd-cm"
    failed.mkdir(parents=True)
    (failed / "failed.json").write_text(
        json.dumps({"job": "bench/dvc.yaml:baseline@rkd-cm-image-0", "error": "error: out of memory", "skipped": False})
    )
    result = runner.invoke(app, ["compare", str(root), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    markdown = (tmp_path / "out" / "compare.md").read_text()
    assert "| Student w/o KD | 73.67 (n=1) | 73.67 (n=1) |" in markdown  # no "± 0.00" that reads as a spread
    assert "± 0.00" not in markdown
    assert "| KD | cm | +4.89 (n=1) |" in markdown  # the paired difference of one seed: its value and n
    failed_line = "- bench/dvc.yaml:baseline@rkd-cm-image-0: error: out of memory"
    assert f"Cells that failed (no result):\n\n{failed_line}" in markdown
    assert "failed: bench/dvc.yaml:baseline@rkd-cm-image-0: error: out of memory" in result.stderr


def test_kept_and_last_epoch_accuracy_and_summed_seconds_come_from_the_s3_curves(results, tmp_path):
    def curve(folder, name, values):
        path = folder / "distill" / "plots" / "metrics" / f"{name}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("step\t" + name + "\n" + "".join(f"{i}\t{v}\n" for i, v in enumerate(values)))

    for seed, (acc, ce) in enumerate([([0.5, 0.7, 0.6], [1.0, 0.8, 0.9]), ([0.4, 0.6, 0.65], [1.2, 0.7, 0.75])]):
        cell = results / f"image-s{seed}" / "kd-cm"
        curve(cell, "val_acc", acc)
        curve(cell, "val_ce", ce)
        curve(cell, "epoch_s", [2.0, 2.0, 3.0])
    result = runner.invoke(app, ["compare", str(results), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    markdown = (tmp_path / "out" / "compare.md").read_text()
    # kept: the epoch of lowest val CE (epoch 1 in both seeds: 70 and 60 -> 65); last: 60 and 65 -> 62.5
    assert "| KD | cm | 65.00 / 62.50 | – | 14 |" in markdown


def test_a_cell_below_the_floor_is_marked_and_listed(results, tmp_path):
    """KD · CM · image at a mean of 60 with the student alone at 82 and a teacher at 95 %: floor 72, marked and
    listed; DKD · CM · audio at 76 with alone 65 and a teacher at 90 %: floor 55, not marked."""

    def set_cell(path, accuracy, teacher_accuracy):
        data = json.loads(path.read_text())
        data["accuracy"] = accuracy
        check = {"teacher": "cm", "val_accuracy": teacher_accuracy, "at_chance": False}
        data["provenance"] = {"method": {"teacher_check": check}}
        path.write_text(json.dumps(data))

    for seed, accuracy in enumerate([0.55, 0.60, 0.65]):
        set_cell(results / f"image-s{seed}" / "kd-cm" / "metrics.json", accuracy, 0.95)
    for seed in range(3):
        set_cell(results / f"audio-s{seed}" / "dkd-cm" / "metrics.json", 0.76, 0.90)
    result = runner.invoke(app, ["compare", str(results), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    line = "KD · CM teacher · image: 60.00 is below the floor 72.00 = max(25, min(alone 82.00, teacher 95.00) - 10)"
    assert line in result.stderr
    markdown = (tmp_path / "out" / "compare.md").read_text()
    assert f"Below the floor (`mst compare`):\n\n- {line}\n" in markdown
    kd_row = next(row for row in markdown.splitlines() if row.startswith("| KD |"))
    assert kd_row.count("†") == 1 and "60.00 ± 5.00 †" in kd_row  # the CM · image cell only
    assert "DKD · CM teacher · audio" not in markdown.split("Below the floor")[1]
