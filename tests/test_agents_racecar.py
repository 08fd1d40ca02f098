"""Integration: fine-tuning with the paper recipe on SimRaceCar-v0 keeps (or improves) the return.

The study's sim-to-sim set-up in miniature, on the F1TENTH preset (the numbers below were
measured on it; the study preset's parking prior leaves fine-tuning little to gain at this
size): sim data D0 and a prior from the kinematic car
(scripted parking with exploration noise; the prior is the SAC actor behaviour-cloned on it), then
online fine-tuning on the dynamic car ("reality") with the paper recipe: mixing D0 0.5 → 1, warm
start with the prior's own actions, actor every 20 critic updates at 1e-5, BRO critic, AdamW with
clipping. Sized for a CPU (deviations from the recipe: BRO width 128 instead of 512, K = 250
gradient steps per episode instead of 2500, initial temperature 0.01), about 75 s on one core.

At this scale the outcome depends on the seed (measured, mean deterministic return over the 20
evaluation starts, prior -> after 8 episodes): seed 0 47 -> 60, seed 2 87 -> 79, seed 1 66 -> 33
(a dip). Measured with α starting at 0.5 when fine-tuning starts (the critic fitting on D0 does
not move the schedule); before that change, with α starting at 0.6: 47 -> 69, 87 -> 80 (-> 90
after 16 episodes), 66 -> 33 (recovering to 64 with K = 1000 after 19k updates). CPU runs are
deterministic, so the test is stable on a given machine; it checks the pipeline end to end, not
the study's statistics.
"""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.logger import configure

import sim2online_envs  # noqa: F401  (registers the env ids)
from sim2online_envs.agents import SAC, paper_recipe
from sim2online_envs.controllers.racecar import make_controller

pytestmark = pytest.mark.slow

EVAL_SEEDS = range(500, 520)


def scripted_demonstrations(n_episodes: int, noise: float, seed: int) -> dict[str, np.ndarray]:
    """Noisy scripted parking on the kinematic car, as transition arrays for D0."""
    env = gym.make("SimRaceCar-v0", preset="f1tenth", dynamics="kinematic")
    controller = make_controller(env)
    rng = np.random.default_rng(seed)
    fields: dict[str, list] = {
        k: [] for k in ("observations", "next_observations", "actions", "rewards", "dones")
    }
    fields["timeouts"] = []
    for episode in range(n_episodes):
        obs, _ = env.reset(seed=seed * 1000 + episode)
        while True:
            action = np.clip(controller(obs) + noise * rng.normal(size=2), -1, 1)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            for key, value in zip(
                fields,
                (obs, next_obs, action, reward, terminated or truncated, truncated),
                strict=True,
            ):
                fields[key].append(value)
            obs = next_obs
            if terminated or truncated:
                break
    return {key: np.asarray(value) for key, value in fields.items()}


def behaviour_clone(model: SAC, data: dict[str, np.ndarray], steps: int) -> None:
    """Maximum-likelihood fit of the SAC actor to the demonstrations (the sim prior)."""
    actor = model.actor
    optimizer = th.optim.Adam(actor.parameters(), lr=1e-3)
    observations = th.as_tensor(data["observations"], dtype=th.float32)
    actions = th.as_tensor(np.clip(data["actions"], -0.999, 0.999), dtype=th.float32)
    generator = th.Generator().manual_seed(0)
    for _ in range(steps):
        index = th.randint(0, len(observations), (256,), generator=generator)
        mean, log_std, _ = actor.get_action_dist_params(observations[index])
        distribution = actor.action_dist.proba_distribution(mean, log_std)
        loss = -distribution.log_prob(actions[index]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def mean_return(model: SAC, env: gym.Env) -> float:
    """Deterministic return averaged over fixed start states (paired before/after)."""
    returns = []
    for seed in EVAL_SEEDS:
        obs, _ = env.reset(seed=seed)
        total, done = 0.0, False
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


def test_paper_recipe_fine_tuning_improves_the_return() -> None:
    threads = th.get_num_threads()
    th.set_num_threads(1)
    try:
        start = time.perf_counter()
        sim_data = scripted_demonstrations(n_episodes=30, noise=0.3, seed=1)
        recipe = paper_recipe("racecar", offline_data=sim_data, buffer_size=50_000)
        recipe["policy_kwargs"].update(critic_width=128)
        recipe["gradient_steps"] = 250
        reality = gym.make("SimRaceCar-v0", preset="f1tenth", dynamics="dynamic")
        model = SAC("MlpPolicy", reality, ent_coef="auto_0.01", seed=0, **recipe)
        # The sim prior: the actor cloned from the sim data, the critic fitted to it (critic-only
        # updates; the online part is empty, so every sample comes from D0).
        behaviour_clone(model, sim_data, steps=1500)
        model.set_logger(configure(folder=None, format_strings=[]))
        model.train_critic(gradient_steps=2000)

        evaluation = gym.make("SimRaceCar-v0", preset="f1tenth", dynamics="dynamic")
        prior_return = mean_return(model, evaluation)
        # Warm start (1250 transitions with the prior's actions), then 8 episodes of updates.
        model.learn(1250 + 8 * 250)
        assert model.replay_buffer.online_transitions() == 3250
        assert model._n_updates == 2000 + 9 * 250  # the warm start's last episode trains too
        tuned_return = mean_return(model, evaluation)
    finally:
        th.set_num_threads(threads)
    print(
        f"prior {prior_return:.1f} -> fine-tuned {tuned_return:.1f} "
        f"({time.perf_counter() - start:.0f} s)"
    )
    # With the parking controller's curvature feedback the prior already parks well (about 93),
    # so what this size can show is stability: fine-tuning online does not collapse the prior
    # (the vanilla recipe does; benchmarks/sim_to_sim.py measures the gain with statistics).
    assert tuned_return > prior_return - 10.0
