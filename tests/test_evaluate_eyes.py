"""benchmarks/eyes.py: ROC AUC and error rates of the EAR as a closed-eye detector, by hand
and on the real Yale and 300-W faces."""

from __future__ import annotations

import json

import pytest

from benchmarks import eyes as evaluate_eyes
from conftest import REPO_DIR, require_data


def test_roc_auc_and_error_rates_by_hand():
    # Closed 0.1, 0.2, 0.3 against open 0.25, 0.3: pairs below 0.1<both, 0.2<both,
    # 0.3 ties 0.3 (half) and is above 0.25: (2 + 2 + 0.5) / 6.
    assert evaluate_eyes.roc_auc([0.1, 0.2, 0.3], [0.25, 0.3]) == pytest.approx(4.5 / 6)
    assert evaluate_eyes.roc_auc([0.1], [0.2, 0.3]) == 1.0 and evaluate_eyes.roc_auc([0.4], [0.2]) == 0.0
    rates = evaluate_eyes.error_rates([0.1, 0.2, 0.3], [0.15, 0.25, 0.3, 0.4], 0.21)
    assert rates == {"threshold": 0.21, "closed_missed": pytest.approx(1 / 3), "open_flagged": 0.25}
    # The best threshold lies between the two groups when they are apart.
    assert 0.2 < evaluate_eyes.best_threshold([0.1, 0.2], [0.3, 0.4]) < 0.3


@pytest.mark.parametrize("flags, marker", [([], "| `yale_eyes`"), (["--refine-eyes"], "| `--refine-eyes`, `yale_eyes`")])
def test_the_figures_on_the_real_faces_are_those_in_the_docs(data_dir, capsys, flags, marker):
    require_data(data_dir / "yale_eyes", "yale_eyes")
    assert evaluate_eyes.main(["--data-dir", str(data_dir), "--json", *flags]) == 0
    yale, smaller, wink, w300 = json.loads(capsys.readouterr().out)
    assert (yale["closed"], yale["open"], wink["closed"], smaller["closed"]) == (15, 134, 15, 15)  # every photo measured
    assert yale["unmeasured"] == []
    assert yale["closed_ear_mean"] < yale["open_ear_mean"] and yale["roc_auc"] > 0.9
    assert w300["closed"] + w300["open"] > 200 and w300["roc_auc"] > 0.8
    for report in (yale, smaller, wink, w300):
        assert 0 <= report["closed_missed"] <= 1 and 0 <= report["open_flagged"] <= 1
    # docs/monitor.md's tables give these figures: a changed model or threshold fails here.
    w300_marker = marker.replace("`yale_eyes`", "300-W test faces")
    documented = [line for line in (REPO_DIR / "docs" / "monitor.md").read_text().splitlines()
                  if line.startswith((marker, w300_marker))]
    assert len(documented) == 4
    for report, row in zip((yale, smaller, wink, w300), documented):
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[1:] == [str(report["closed"]), str(report["open"]),
                             f"{report['closed_ear_mean']:.3f} / {report['open_ear_mean']:.3f}",
                             f"{report['roc_auc']:.3f}", f"{100 * report['closed_missed']:.0f} %",
                             f"{100 * report['open_flagged']:.1f} %", f"{report['best_threshold']:.3f}"], row


def test_the_recommended_monitor_thresholds_give_what_the_docs_say(data_dir, capsys):
    """docs/monitor.md: with --refine-eyes --ear-close 0.15 --ear-open 0.2, every closed-eyed
    Yale photo held still raises drowsy, and 2 of the 134 open-eyed ones raise an event."""
    require_data(data_dir / "yale_eyes", "yale_eyes")
    assert evaluate_eyes.main(["--data-dir", str(data_dir), "--refine-eyes", "--as-video", "--ear-close", "0.15",
                               "--ear-open", "0.2", "--json"]) == 0
    video = json.loads(capsys.readouterr().out)[-1]
    docs = (REPO_DIR / "docs" / "monitor.md").read_text().replace("\n", " ")
    assert (video["closed_drowsy"], video["closed_photos"], video["open_photos"]) == (15, 15, 134)
    count = len(video["open_with_events"])
    assert f"give `drowsy` on all 15 closed-eyed photos and an event on {count} of the 134 open-eyed ones" in docs


def test_thresholds_that_cross_are_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate_eyes.main(["--ear-close", "0.25", "--ear-open", "0.2"])
    assert exit_info.value.code == 2
    assert "need 0 < close < open" in capsys.readouterr().err
