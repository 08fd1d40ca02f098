"""benchmarks/sim_to_sim_go1.py: the report from rows, and the ``--quick`` run end to end (under
a minute here once numba's cache is warm, so not marked slow)."""

from __future__ import annotations

import csv
import math
import pathlib

import pytest

from benchmarks import sim_to_sim, sim_to_sim_go1


def _rows(path: pathlib.Path) -> list[dict[str, str]]:
    with path.open() as file:
        return list(csv.DictReader(file))


def test_report_writes_its_own_section_beside_the_cars(tmp_path: pathlib.Path) -> None:
    with (tmp_path / "sim_to_sim_go1.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=sim_to_sim.FIELDS)
        writer.writeheader()
        for seed in (0, 1):
            for run in ("vanilla", "full"):
                for episode in (1, 2):
                    writer.writerow(
                        dict(
                            seed=seed,
                            run=run,
                            method=run,
                            policy_delay=20,
                            episode=episode,
                            eval_return=1.0 + seed,
                            prior_return=0.5,
                            relative_return=0.5 + seed,
                            train_return=1.0,
                            q_error_mean=0.1,
                            q_error_abs_mean=0.2,
                            elapsed_s=1.0,
                        )
                    )
    car = "<!-- sim_to_sim:begin -->\ncar table\n<!-- sim_to_sim:end -->\n"
    (tmp_path / "results.md").write_text(f"# Results\n\n{car}\nhand-written\n")
    budget = sim_to_sim_go1.QUICK
    sim_to_sim_go1.report(tmp_path, budget, tmp_path / "results.md")
    sim_to_sim_go1.report(tmp_path, budget, tmp_path / "results.md")  # regenerated in place
    text = (tmp_path / "results.md").read_text()
    assert car in text and "hand-written" in text
    assert text.count(sim_to_sim_go1.HEADING) == 1 and text.count("sim_to_sim_go1:begin") == 1
    assert "| vanilla | 2 | 2 | 0.50 | +1.00 ± 0.50 | +0.50, +1.50 |" in text
    assert "Runs finished: 4 of 12" in text
    for name in ("curves", "q_error"):
        assert (tmp_path / f"sim_to_sim_go1_{name}.png").stat().st_size > 1000
    assert not (tmp_path / "sim_to_sim_go1_delay.png").exists()


def test_quick_run_end_to_end(tmp_path: pathlib.Path) -> None:
    assert sim_to_sim_go1.main(["--quick", "--out", str(tmp_path), "--priors", str(tmp_path)]) == 0
    budget = sim_to_sim_go1.QUICK
    rows = _rows(tmp_path / "sim_to_sim_go1.csv")
    runs = sim_to_sim_go1.RUNS
    assert len(rows) == len(runs) * budget.seeds * budget.episodes
    assert {(r["run"], int(r["seed"])) for r in rows} == {
        (run, seed) for run in runs for seed in range(budget.seeds)
    }
    for row in rows:
        relative = float(row["relative_return"])
        assert math.isfinite(relative)
        assert relative == pytest.approx(float(row["eval_return"]) - float(row["prior_return"]))
    gap = _rows(tmp_path / "sim_to_sim_go1_gap.csv")
    assert len(gap) == budget.seeds
    assert all(math.isfinite(float(v)) for g in gap for v in g.values())
    text = (tmp_path / "results.md").read_text()
    assert sim_to_sim_go1.HEADING in text
    assert "<!-- sim_to_sim_go1:begin" in text and "<!-- sim_to_sim_go1:end -->" in text
    assert f"Runs finished: {len(runs) * budget.seeds} of" in text
    for run in runs:
        assert f"| {run} | {budget.seeds} | {budget.episodes} |" in text
