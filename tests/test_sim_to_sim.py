"""benchmarks/sim_to_sim.py: a tiny prior, one episode per method, the report (CSV, table,
plots)."""

from __future__ import annotations

import csv
import dataclasses
import pathlib

import pytest

from benchmarks import sim_to_sim

TINY = dataclasses.replace(
    sim_to_sim.QUICK,
    seeds=1,
    episodes=1,
    gradient_steps=5,
    warm_start_steps=50,
    num_envs=2,
    demo_steps=20,
    pretrain_steps=100,
)


@pytest.fixture(autouse=True)
def short_reality(monkeypatch: pytest.MonkeyPatch) -> None:
    # 50-step episodes on "reality": the same code paths, a fraction of the time.
    monkeypatch.setattr(
        sim_to_sim, "REALITY", {**sim_to_sim.REALITY, "task_config": {"max_episode_steps": 50}}
    )


@pytest.fixture(scope="module")
def prior(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return sim_to_sim.pretrain_prior(TINY, 0, tmp_path_factory.mktemp("priors"))


@pytest.mark.parametrize(
    "method",
    [
        "resfit",
        pytest.param("vanilla", marks=pytest.mark.slow),
        pytest.param("sgft", marks=pytest.mark.slow),
    ],
)
def test_a_run_reports_each_episode_relative_to_the_prior(prior: pathlib.Path, method: str) -> None:
    job = sim_to_sim.Job(0, method, method, None, str(prior), TINY)
    rows = sim_to_sim.finetune_run(job)
    assert len(rows) == TINY.episodes
    row = rows[0]
    assert row["relative_return"] == pytest.approx(row["eval_return"] - row["prior_return"])
    assert set(sim_to_sim.FIELDS) <= set(row)
    if method == "resfit":
        # Zero residual at the hand-off, a critic-only warm-up, then actor lr 1e-6: one episode
        # later the deterministic policy is still the prior's to a thousandth of a point.
        assert row["relative_return"] == pytest.approx(0.0, abs=1e-3)


def test_report_writes_table_and_plots(tmp_path: pathlib.Path) -> None:
    with (tmp_path / "sim_to_sim.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=sim_to_sim.FIELDS)
        writer.writeheader()
        for seed in (0, 1):
            for run in ("vanilla", "full", "full_M5"):
                for episode in (1, 2):
                    writer.writerow(
                        dict(
                            seed=seed,
                            run=run,
                            method=run.split("_")[0],
                            policy_delay=20,
                            episode=episode,
                            eval_return=10.0 + seed,
                            prior_return=8.0,
                            relative_return=2.0 + seed,
                            train_return=1.0,
                            q_error_mean=0.5,
                            q_error_abs_mean=0.7,
                            elapsed_s=1.0,
                        )
                    )
    (tmp_path / "results.md").write_text("# Results\n\nhand-written part\n")
    sim_to_sim.report(tmp_path, TINY, tmp_path / "results.md")
    sim_to_sim.report(tmp_path, TINY, tmp_path / "results.md")  # regenerated in place
    text = (tmp_path / "results.md").read_text()
    assert text.count("sim_to_sim:begin") == 1 and "hand-written part" in text
    assert "| vanilla | 2 | 2 |" in text and "+2.5 ± 0.5" in text
    for name in ("curves", "q_error", "delay"):
        assert (tmp_path / f"sim_to_sim_{name}.png").stat().st_size > 1000


@pytest.mark.slow
def test_quick_run_end_to_end(tmp_path: pathlib.Path) -> None:
    assert sim_to_sim.main(["--quick", "--out", str(tmp_path), "--priors", str(tmp_path)]) == 0
    assert (tmp_path / "sim_to_sim.csv").is_file() and (tmp_path / "results.md").is_file()
