"""sim2online pretrain / finetune (with --resume) / evaluate on a tiny budget."""

from __future__ import annotations

import csv
import json
import pathlib

from sim2online_envs.cli import main


def test_pretrain_finetune_resume_evaluate(tmp_path: pathlib.Path) -> None:
    env = ["--env", "dynamics=kinematic"]
    prior = tmp_path / "prior"
    assert (
        main(
            [
                "pretrain",
                "SimRaceCar-v0",
                *env,
                "--steps",
                "300",
                "--learning-starts",
                "100",
                "--critic-width",
                "16",
                "--set",
                "batch_size=32",
                "--out",
                str(prior),
            ]
        )
        == 0
    )
    assert (prior / "checkpoint" / "checkpoint.json").is_file()
    assert (prior / "learning_curve.png").is_file() and any((prior / "tb").iterdir())
    run = tmp_path / "fine"
    common = [
        "finetune",
        "SimRaceCar-v0",
        "--env",
        "dynamics=dynamic",
        "--prior",
        str(prior / "checkpoint"),
        "--method",
        "sgft",
        "--gradient-steps",
        "5",
        "--warm-start-steps",
        "250",
        "--out",
        str(run),
    ]
    assert main([*common, "--episodes", "1"]) == 0
    assert json.loads((run / "progress.json").read_text())["episodes"] == 1
    assert main([*common, "--episodes", "2", "--resume"]) == 0
    assert json.loads((run / "progress.json").read_text())["episodes"] == 2
    for name in ("learning_curve.png", "q_error.png", "q_error.csv"):
        assert (run / name).is_file()
    with (run / "episodes.csv").open() as file:  # warm start + 2 episodes, across the resume
        episodes = list(csv.DictReader(file))
    with (run / "q_error.csv").open() as file:
        q_rows = list(csv.DictReader(file))
    assert [int(row["episode"]) for row in episodes] == [0, 1, 2] == list(range(len(q_rows)))
    for row, q_row in zip(episodes, q_rows, strict=True):
        assert row["end"] in ("time_limit", "safety_arena"), row
        assert int(row["length"]) == int(float(q_row["length"]))
    result = tmp_path / "eval.json"
    assert (
        main(
            [
                "evaluate",
                "SimRaceCar-v0",
                "--env",
                "dynamics=dynamic",
                "--model",
                str(run / "checkpoint"),
                "--episodes",
                "2",
                "--out",
                str(result),
            ]
        )
        == 0
    )
    assert len(json.loads(result.read_text())["returns"]) == 2
