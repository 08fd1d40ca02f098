"""Sim-to-online on the RC race car, end to end: pretrain in sim, fine-tune on "reality".

What, in the study's sim-to-sim set-up (the prior's simulator and "reality" differ in physics):

1. **Pretrain** SAC on ``make_vec("SimRaceCar-v0", N, dynamics="kinematic")``: N domain
   randomised kinematic-bicycle worlds stepped together (mass, tyre friction, motor gains and
   resistances drawn per world and episode). Episodes of the scripted parking controller plus
   action noise, collected from all N worlds at once, are half of every minibatch.
2. **Save the prior** as one whole-state checkpoint
   (:func:`~sim2online_envs.agents.save_checkpoint`: weights, targets, optimisers, temperature,
   counters, RNG states and the sim replay buffer, written atomically with checksums).
3. **Fine-tune online** on "reality", the dynamic bicycle with Pacejka tyres and a motor model
   (``sim2online_envs.make_env("racecar", dynamics="dynamic")``, the same wrapper stack as the
   real car), with ``paper_recipe("racecar")``: D0 = the checkpoint's sim buffer
   (:func:`~sim2online_envs.agents.load_replay_buffer_as_offline`, checksum-verified) mixed into
   every minibatch (online fraction 0.5 -> 1), warm start with the prior's own actions, the
   actor updated once every M = 20 critic updates at lr 1e-5, episodic updates, and the
   :class:`~sim2online_envs.agents.QErrorCallback` (Q against the Monte-Carlo return).
4. **Compare** with ``vanilla_recipe("racecar")`` (the same prior, episodes and K, without the
   stabilisers; ``--no-compare-vanilla`` skips it).
5. **Evaluate** the scripted controller and the prior on sim and reality, and both fine-tuned
   policies on reality (deterministic, the same 20 start states each time), and log a table.

Why: this is what the package is for. A prior trained cheaply in simulation goes on learning on
the real car, and the hand-off must not wreck it: measured with the default budget (seed 0, CPU,
the default "study" car preset), the prior's 58 return on reality (40 % parked) rises to 77
(50 %) after 20 episodes with the paper recipe, and falls to 10 (10 %) with the vanilla one
(its Q-error diagnostic did not warn in this run; with the earlier F1TENTH default it did, as the
prior's 121 fell to 28). Run it in sim-to-sim first, then swap the reality env for the real car's
(``make_env("racecar", "real", ...)``) without touching anything else.

Why demonstrations in step 1 (measured on 16 worlds, 4 updates per batched step, 10 starts): at
60 Hz SAC's per-step exploration drifts the car away from the goal (training returns about -4),
and from scratch its deterministic return was still -0.2 after 20k steps (with SB3's initial
temperature 1.0: zero motion after 60k). With half of every minibatch from noisy scripted
episodes (RLPD's symmetric sampling) it reached 37 after 25k steps and 100 after 60k; the policy
is SAC's own, never cloned. ``--demo-steps 0`` pretrains from scratch.

Run::

    .venv/bin/python examples/pretrain_then_finetune_racecar.py --quick  # ~1-2 min smoke run
    .venv/bin/python examples/pretrain_then_finetune_racecar.py          # the default budget
    .venv/bin/python examples/pretrain_then_finetune_racecar.py --prior runs/car/prior

The defaults are sized for a CPU (BRO critic width 128 instead of 512, K = 250 gradient steps per
episode instead of 2500); ``--critic-width 512 --gradient-steps 2500`` is the paper's recipe.
Outputs in ``--out``: ``prior/``, ``finetuned/`` and ``finetuned_vanilla/`` checkpoints,
``pretrain_monitor.csv``, ``q_error.csv`` and ``q_error_vanilla.csv`` (one row per episode on
reality) and ``summary.json`` (the table's numbers).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th

import sim2online_envs
from sim2online_envs.agents import (
    SAC,
    MixingReplayBuffer,
    QErrorCallback,
    load_checkpoint,
    load_replay_buffer_as_offline,
    paper_recipe,
    save_checkpoint,
    vanilla_recipe,
)
from sim2online_envs.controllers.racecar import make_controller
from sim2online_envs.priors import PriorBudget, pretrain_prior

logger = logging.getLogger("examples.pretrain_then_finetune_racecar")

ENV_ID = "SimRaceCar-v0"
#: Start states of the evaluation episodes: env.reset(seed=EVAL_SEED + i), never used in training.
EVAL_SEED = 10_000


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much compute each stage gets (``--quick`` and the defaults; each flag overrides)."""

    num_envs: int = 16
    demo_steps: int = 500
    pretrain_steps: int = 100_000
    pretrain_gradient_steps: int = 4
    critic_width: int = 128
    finetune_episodes: int = 20
    gradient_steps: int = 250
    warm_start_steps: int = 1250
    eval_episodes: int = 20


QUICK = Budget(
    num_envs=8,
    demo_steps=250,
    pretrain_steps=4000,
    pretrain_gradient_steps=2,
    critic_width=64,
    finetune_episodes=2,
    gradient_steps=50,
    warm_start_steps=250,
    eval_episodes=4,
)


# -- stage 1: pretraining in sim ---------------------------------------------------------------


def pretrain(args: argparse.Namespace, out: Path) -> Path:
    """Stage 1 and 2: SAC on the batched kinematic car; returns the prior's checkpoint folder.

    :func:`sim2online_envs.priors.pretrain_prior` with this example's budget: the package's
    shipped prior is made the same way (``sim2online prior racecar``)."""
    budget = PriorBudget(
        env_id=ENV_ID,
        env_kwargs=(("dynamics", "kinematic"),),
        num_envs=args.num_envs,
        demo_steps=args.demo_steps,
        demo_noise=args.demo_noise,
        steps=args.pretrain_steps,
        gradient_steps=args.pretrain_gradient_steps,
        critic_width=args.critic_width,
    )
    return pretrain_prior(budget, out, seed=args.seed)


# -- stage 3: fine-tuning on "reality" --------------------------------------------------------


def make_reality() -> gym.Env:
    """The "real" car of the sim-to-sim study, with the package's standard wrapper stack."""
    return sim2online_envs.make_env("racecar", dynamics="dynamic")


def load_prior_for_finetuning(
    args: argparse.Namespace, prior_dir: Path, env: gym.Env, recipe_name: str = "paper"
) -> SAC:
    """The prior's whole state with a recipe on top.

    ``"paper"``: the study's stabilisers, D0 = the prior's sim buffer. ``"vanilla"``: the
    unstable baseline (M = 1, one learning rate, no D0, no warm start), for comparison.
    """
    if recipe_name == "paper":
        recipe = paper_recipe(
            "racecar",
            buffer_size=args.finetune_episodes * 250 + args.warm_start_steps + 250,
            for_load=True,  # the networks are the prior's
        )
        recipe["warm_start_steps"] = args.warm_start_steps
    elif recipe_name == "vanilla":
        recipe = vanilla_recipe("racecar", for_load=True)
    else:
        raise ValueError(f"recipe_name must be 'paper' or 'vanilla', got {recipe_name!r}")
    recipe["gradient_steps"] = args.gradient_steps  # the same K for both
    # The model file is verified against the manifest's checksum. action_noise=None: whatever
    # pretraining used must not carry over.
    model = load_checkpoint(
        SAC, prior_dir, env=env, load_replay_buffer=False, action_noise=None, **recipe
    )
    if recipe_name == "paper":
        # The sim buffer becomes D0, not the online buffer: verified against its checksum too,
        # its spaces checked against the model's; the agent's sim transitions and (its own D0)
        # the demonstrations.
        load_replay_buffer_as_offline(model, prior_dir, include_offline=True)
    d0 = (
        model.replay_buffer.offline_size
        if isinstance(model.replay_buffer, MixingReplayBuffer)
        else 0
    )
    logger.info(
        "prior loaded from %s with the %s recipe: D0 = %d sim transitions, temperature %.4f, "
        "%d updates so far",
        prior_dir,
        recipe_name,
        d0,
        float(th.exp(model.log_ent_coef.detach())),
        model._n_updates,
    )
    return model


def finetune(
    args: argparse.Namespace, model: SAC, out: Path, label: str = ""
) -> tuple[QErrorCallback, int]:
    """Stage 3: warm start (if the recipe has one), then ``finetune_episodes`` episodes.

    One ``learn`` call per episode (with ``train_freq=(1, "episode")``, ``learn(1)`` collects one
    whole episode, then makes its K updates), so the budget counts episodes even when the safety
    wrapper cuts some short, and a checkpoint is written after every episode's updates, where a
    run on the real car would resume from. ``label`` suffixes the output names.

    Returns the Q-error diagnostic (one row per episode on reality) and the number of warm-start
    episodes among them.
    """
    suffix = f"_{label}" if label else ""
    q_error = QErrorCallback(csv_path=out / f"q_error{suffix}.csv")
    updates, actor_updates = model._n_updates, model.n_actor_updates
    start = time.perf_counter()
    warm_start_episodes = 0
    if model.warm_start_steps:
        # Episodes with the prior's own actions and no update until N* transitions are in; the
        # last warm-start episode is followed by its K updates.
        model.learn(model.warm_start_steps, callback=q_error)
        warm_start_episodes = len(q_error.history)
        logger.info(
            "warm start: %d episodes, %d transitions with the prior's actions",
            warm_start_episodes,
            model.num_timesteps,
        )
    for episode in range(args.finetune_episodes):
        first = episode == 0 and not model.warm_start_steps
        model.learn(1, callback=q_error, reset_num_timesteps=first)
        save_checkpoint(model, out / f"finetuned{suffix}")
        row = q_error.history[-1]
        mixing = (
            f", online fraction {model.replay_buffer.current_online_fraction():.2f}"
            if isinstance(model.replay_buffer, MixingReplayBuffer)
            else ""
        )
        logger.info(
            "%sepisode %d/%d on reality: return %6.1f over %3d steps, Q - G %+.2f%s",
            f"[{label}] " if label else "",
            episode + 1,
            args.finetune_episodes,
            row["episode_return"],
            row["length"],
            row["mean"],
            mixing,
        )
    logger.info(
        "fine-tuned on reality: %d steps, %d critic and %d actor updates, %.0f s",
        model.num_timesteps,
        model._n_updates - updates,
        model.n_actor_updates - actor_updates,
        time.perf_counter() - start,
    )
    return q_error, warm_start_episodes


# -- evaluation -------------------------------------------------------------------------------


def evaluate(policy: Callable[[np.ndarray], np.ndarray], env: gym.Env, episodes: int) -> dict:
    """Return, success (inside the goal radius at the end) and final distance, per start state."""
    returns, successes, distances = [], [], []
    for i in range(episodes):
        obs, _ = env.reset(seed=EVAL_SEED + i)
        total, done, info = 0.0, False, {}
        while not done:
            obs, reward, terminated, truncated, info = env.step(policy(obs))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
        successes.append(bool(info["is_success"]))
        distances.append(float(info["distance"]))
    return {
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
        "success_rate": float(np.mean(successes)),
        "mean_final_distance": float(np.mean(distances)),
    }


def deterministic(model: SAC) -> Callable[[np.ndarray], np.ndarray]:
    return lambda obs: model.predict(obs, deterministic=True)[0]


def log_table(rows: Sequence[tuple[str, str, dict[str, float]]]) -> None:
    """The before/after table, through logging."""
    header = f"{'policy':<12} {'env':<20} {'return':>14} {'success':>8} {'final d (m)':>12}"
    logger.info(header)
    logger.info("-" * len(header))
    for policy, env_name, r in rows:
        logger.info(
            "%-12s %-20s %7.1f ± %5.1f %7.0f%% %12.2f",
            policy,
            env_name,
            r["mean_return"],
            r["std_return"],
            100 * r["success_rate"],
            r["mean_final_distance"],
        )


# -- command line -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/racecar_sim_to_online"))
    parser.add_argument(
        "--quick", action="store_true", help="a 1-2 minute CPU smoke run (flags still override)"
    )
    parser.add_argument(
        "--prior", type=Path, default=None, help="fine-tune this prior checkpoint, skip stage 1"
    )
    parser.add_argument(
        "--compare-vanilla",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also fine-tune the prior with vanilla_recipe (no stabilisers), for the table",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--torch-threads", type=int, default=1)
    budget = parser.add_argument_group("budget (defaults: see Budget; --quick: QUICK)")
    budget.add_argument("--num-envs", type=int, help="batched sim worlds for pretraining")
    budget.add_argument("--demo-steps", type=int, help="batched scripted steps seeding the buffer")
    budget.add_argument("--demo-noise", type=float, default=0.3, help="their action noise std")
    budget.add_argument("--pretrain-steps", type=int, help="SAC steps in sim (all worlds)")
    budget.add_argument("--pretrain-gradient-steps", type=int, help="updates per batched step")
    budget.add_argument("--critic-width", type=int, help="BRO critic width (paper: 512)")
    budget.add_argument("--finetune-episodes", type=int, help="episodes of updates on reality")
    budget.add_argument("--gradient-steps", type=int, help="K per episode (paper: 2500)")
    budget.add_argument("--warm-start-steps", type=int, help="N* (paper: 1250)")
    budget.add_argument("--eval-episodes", type=int, help="start states per evaluation")
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else Budget()
    for field in dataclasses.fields(Budget):
        if getattr(args, field.name) is None:
            setattr(args, field.name, getattr(defaults, field.name))
        minimum = 0 if field.name in ("demo_steps", "warm_start_steps") else 1
        if getattr(args, field.name) < minimum:
            flag = "--" + field.name.replace("_", "-")
            parser.error(f"{flag} must be >= {minimum}, got {getattr(args, field.name)}")
    if args.demo_noise < 0:
        parser.error(f"--demo-noise must be >= 0, got {args.demo_noise}")
    if args.prior is not None and not (args.prior / "checkpoint.json").is_file():
        parser.error(f"--prior {args.prior}: no checkpoint.json there (a save_checkpoint folder)")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the workflow; writes ``summary.json`` and returns it."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    th.set_num_threads(args.torch_threads)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    prior_dir = args.prior if args.prior is not None else pretrain(args, args.out)
    pretrain_s = time.perf_counter() - start

    reality = make_reality()
    model = load_prior_for_finetuning(args, prior_dir, reality)
    sim_eval = gym.make(ENV_ID, dynamics="kinematic")
    reality_eval = make_reality()
    scripted = make_controller(sim_eval)
    rows = [
        ("scripted", "sim (kinematic)", evaluate(scripted, sim_eval, args.eval_episodes)),
        ("scripted", "reality (dynamic)", evaluate(scripted, reality_eval, args.eval_episodes)),
        ("prior", "sim (kinematic)", evaluate(deterministic(model), sim_eval, args.eval_episodes)),
    ]
    prior_reality = evaluate(deterministic(model), reality_eval, args.eval_episodes)
    rows.append(("prior", "reality (dynamic)", prior_reality))

    q_error, warm_start_episodes = finetune(args, model, args.out)
    tuned = evaluate(deterministic(model), reality_eval, args.eval_episodes)
    rows.append(("fine-tuned", "reality (dynamic)", tuned))
    vanilla: dict[str, Any] | None = None
    if args.compare_vanilla:
        # The same prior, episodes and K without the stabilisers: what the recipe protects from.
        vanilla_env = make_reality()
        baseline = load_prior_for_finetuning(args, prior_dir, vanilla_env, "vanilla")
        vanilla_q_error, _ = finetune(args, baseline, args.out, label="vanilla")
        result = evaluate(deterministic(baseline), reality_eval, args.eval_episodes)
        rows.append(("vanilla", "reality (dynamic)", result))
        vanilla = {
            "return_change_on_reality": result["mean_return"] - prior_reality["mean_return"],
            "episode_returns_on_reality": [r["episode_return"] for r in vanilla_q_error.history],
            "q_error_mean_per_episode": [r["mean"] for r in vanilla_q_error.history],
        }
        vanilla_env.close()
    log_table(rows)

    summary = {
        "budget": {f.name: getattr(args, f.name) for f in dataclasses.fields(Budget)},
        "quick": args.quick,
        "seed": args.seed,
        "prior": str(prior_dir),
        "evaluation": [{"policy": p, "env": e, **r} for p, e, r in rows],
        "return_change_on_reality": tuned["mean_return"] - prior_reality["mean_return"],
        "warm_start_episodes": warm_start_episodes,
        "finetune_steps": int(model.num_timesteps),
        "episode_returns_on_reality": [row["episode_return"] for row in q_error.history],
        "q_error_mean_per_episode": [row["mean"] for row in q_error.history],
        "overestimation_growing": q_error.overestimation_growing,
        "vanilla": vanilla,
        "pretrain_s": pretrain_s,
        "total_s": time.perf_counter() - start,
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    logger.info(
        "summary written to %s (%.0f s in all)", args.out / "summary.json", summary["total_s"]
    )
    for env in (reality, sim_eval, reality_eval):
        env.close()
    return summary


if __name__ == "__main__":
    main()
