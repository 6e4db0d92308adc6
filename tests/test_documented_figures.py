"""The accuracy figures that README.md, docs/results.md and the model card give for the
shipped models are the ones the shipped files score today (LFPW test, dataset boxes): a
framing regression, a re-exported model or a stale document fails here."""

from __future__ import annotations

import re

import pytest

import evaluate
from conftest import REPO_DIR

TOLERANCE_POINTS = 0.05  # NME and FR, in percentage points


def table_rows(markdown: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in markdown.splitlines() if line.strip().startswith("|")]


def percent(cell: str) -> float:
    match = re.fullmatch(r"([0-9.]+) ?%", cell)
    assert match, f"not a percentage: {cell!r}"
    return float(match.group(1))


def documented(path, fmt: str) -> dict:
    """{column name: value} of the row for `fmt` with the dataset's boxes, in every table of
    `path` that has one (README: "int8 (0.71 MB)"; model card: "int8")."""
    found = []
    header = None
    for row in table_rows(path.read_text()):
        if row and row[0] == "model":
            header = row
            continue
        if header and row[0].split(" (")[0] == fmt and row[1].startswith("dataset"):
            found.append(dict(zip(header, row)))
    return found


@pytest.fixture(scope="module")
def scored(subset_dir):
    faces = evaluate.evaluation_faces(subset_dir, "test")
    assert evaluate.scored_parts(faces) == {"lfpw/testset": 224}
    import face_mesh
    import parts

    results, runners = {}, {}
    for fmt in ("int8", "float32"):
        runners[fmt] = evaluate.load_landmark_model(REPO_DIR / "models" / f"landmarks_{fmt}.tflite")
        results[fmt] = evaluate.evaluate(runners[fmt], faces)
    # the options that add a second network's view, on the int8 model
    mesh, eyes = face_mesh.MeshLandmarks(), parts.PartRefiner(parts.EYES)
    boxes = evaluate.face_boxes(faces)
    runner_int8 = runners["int8"]
    results["int8, `--refine-eyes`"] = evaluate.evaluate(runner_int8, faces, boxes=boxes, part_refiners=[eyes])
    results["int8, `--with-mesh`"] = evaluate.evaluate(runner_int8, faces, boxes=boxes, mesh=mesh)
    results["int8, `--with-mesh --refine-eyes`"] = evaluate.evaluate(runner_int8, faces, boxes=boxes, mesh=mesh,
                                                                       part_refiners=[eyes])
    return results


@pytest.mark.parametrize("document", ["README.md", "docs/results.md", "models/README.md"])
@pytest.mark.parametrize("fmt", ["int8", "float32", "int8, `--refine-eyes`", "int8, `--with-mesh`",
                                 "int8, `--with-mesh --refine-eyes`"])
def test_documented_accuracy_is_what_the_shipped_model_scores(scored, document, fmt):
    rows = documented(REPO_DIR / document, fmt)
    assert rows, f"{document}: no table row for {fmt} with the dataset's boxes"
    measured = scored[fmt]
    for row in rows:
        nme = percent(next(v for k, v in row.items() if k.startswith("NME") and "pupil" not in k))
        assert nme == pytest.approx(100 * measured["nme_ion"], abs=TOLERANCE_POINTS), (document, row)
        assert percent(row["FR@0.08"]) == pytest.approx(100 * measured["fr_008"], abs=TOLERANCE_POINTS)
