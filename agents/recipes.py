"""The study's settings and the unstable baseline, as keyword arguments for SAC.

==================================== ========== ========== ==========
Setting (paper recipe)               panda      go1        racecar
==================================== ========== ========== ==========
gradient steps per episode K         1250       1250       2500
episode length (the env's)           250        1000       250
actor every M critic updates         20         20         20
actor / critic learning rate         1e-5/3e-4  1e-5/3e-4  1e-5/3e-4
batch size                           128        512        256
discount γ                           0.95       0.95       0.99
online fraction α (gradient steps)   0.5→1/10k  0.5→1/15k  0.5→1/10k
warm start N* (transitions)          5000       5000       1250
critic                               BRO 512×2  BRO 512×2  BRO 512×2
optimiser                            AdamW, gradient norm clipped at 1.0; temperature Adam
τ                                    0.005      0.005      0.005
vision (panda)                       encoder 32/64/128/256 → 128, LayerNorm, tanh, trained by
                                     the critic, DrQ random shift (pad 4)
==================================== ========== ========== ==========

Where the study's public code and paper differ the paper is followed (DESIGN.md). Deviations:
the temperature optimiser's learning rate is SB3's default (the critic's, 3e-4), which the
study does not state; AdamW keeps torch's default weight decay (0.01).

The same settings serve TD3, TQC and CrossQ (``algorithm=``): the stabilisers are the same;
TQC and CrossQ keep sb3-contrib's own critics (no BRO, no critic-trained shared encoder or DrQ:
those are policy extras of SAC and TD3), CrossQ has no target networks (no ``tau``) and no
image policy in sb3-contrib. Use::

    model = SAC("MultiInputPolicy", env, **paper_recipe("panda", offline_data="sim.pkl"))
    model = TQC("MlpPolicy", env, **paper_recipe("racecar", algorithm="TQC"))
    # or fine-tune a prior trained with the same architecture:
    model = SAC.load("prior.zip", env=env, **paper_recipe("panda", for_load=True))
"""

from __future__ import annotations

import pathlib
from typing import Any

import torch as th

from sim2online_envs.agents.buffers import MixingReplayBuffer, OfflineSource
from sim2online_envs.agents.policies import ImageEncoder, MultiInputEncoder

#: Per-robot numbers from the study (DESIGN.md "Agents").
ROBOT_SETTINGS: dict[str, dict[str, Any]] = {
    "panda": {
        "gradient_steps": 1250,
        "batch_size": 128,
        "gamma": 0.95,
        "mixing_steps": 10_000,
        "warm_start_steps": 5000,
    },
    "go1": {
        "gradient_steps": 1250,
        "batch_size": 512,
        "gamma": 0.95,
        "mixing_steps": 15_000,
        "warm_start_steps": 5000,
    },
    "racecar": {
        "gradient_steps": 2500,
        "batch_size": 256,
        "gamma": 0.99,
        "mixing_steps": 10_000,
        "warm_start_steps": 1250,
    },
}

#: The algorithms the recipes are written for.
ALGORITHMS = ("SAC", "TD3", "TQC", "CrossQ")

#: Constructor arguments that ``SAC.load`` cannot change (SB3 keeps the saved ones).
_CONSTRUCTION_ONLY = ("policy_kwargs",)


def _robot(robot: str) -> dict[str, Any]:
    key = robot.lower()
    if key not in ROBOT_SETTINGS:
        raise ValueError(f"robot must be one of {sorted(ROBOT_SETTINGS)}, got {robot!r}")
    return ROBOT_SETTINGS[key]


def _policy_kwargs(robot: str, images: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "net_arch": [256, 256],  # the actor's; the BRO critic is sized by critic_width/blocks
        "critic_arch": "bro",
        "critic_width": 512,
        "critic_blocks": 2,
        "optimizer_class": th.optim.AdamW,
    }
    if images:
        kwargs.update(
            features_extractor_class=MultiInputEncoder if robot == "panda" else ImageEncoder,
            share_features_extractor=True,
            image_augmentation="random_shift",
            random_shift_pad=4,
        )
    return kwargs


def paper_recipe(
    robot: str,
    *,
    offline_data: OfflineSource | list[OfflineSource] | str | pathlib.Path | None = None,
    buffer_size: int = 1_000_000,
    for_load: bool = False,
    algorithm: str = "SAC",
) -> dict[str, Any]:
    """The study's stabilised settings for ``robot`` ("panda", "go1", "racecar") as keyword
    arguments of ``algorithm`` ("SAC", the study's, or "TD3", "TQC", "CrossQ").

    ``offline_data``: D0 for the mixing buffer (a saved replay buffer's path, a buffer, transition
    arrays). ``for_load``: leave out what ``SAC.load`` cannot change (``policy_kwargs``), for
    fine-tuning a prior that was built with the same architecture.
    """
    settings = _robot(robot)
    recipe: dict[str, Any] = {
        "learning_rate": 3e-4,
        "actor_learning_rate": 1e-5,
        "policy_delay": 20,
        "batch_size": settings["batch_size"],
        "gamma": settings["gamma"],
        "tau": 0.005,
        "buffer_size": buffer_size,
        "train_freq": (1, "episode"),
        "gradient_steps": settings["gradient_steps"],
        "learning_starts": 0,
        "warm_start_steps": settings["warm_start_steps"],
        "max_grad_norm": 1.0,
        "replay_buffer_class": MixingReplayBuffer,
        "replay_buffer_kwargs": {
            "online_fraction": (0.5, 1.0, settings["mixing_steps"]),
            "offline_data": offline_data,
        },
        "policy_kwargs": _policy_kwargs(robot.lower(), images=robot.lower() == "panda"),
    }
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    if algorithm in ("TQC", "CrossQ"):
        if algorithm == "CrossQ":
            if robot.lower() == "panda":
                raise ValueError(
                    "CrossQ has no image policy in sb3-contrib: use SAC, TD3 or TQC for the panda"
                )
            del recipe["tau"]  # no target networks
        policy_kwargs = recipe["policy_kwargs"]
        recipe["policy_kwargs"] = {
            key: policy_kwargs[key]
            for key in ("net_arch", "optimizer_class", "features_extractor_class")
            if key in policy_kwargs and not (algorithm == "CrossQ" and key == "net_arch")
        }
    if for_load:
        for key in _CONSTRUCTION_ONLY:
            recipe.pop(key)
    return recipe


def vanilla_recipe(robot: str | None = None, *, for_load: bool = False) -> dict[str, Any]:
    """The unstable baseline: M = 1, one learning rate 3e-4, no mixing, no warm start.

    With ``robot`` the episode schedule, batch size and discount are the robot's (so that only the
    stabilisers differ from :func:`paper_recipe`); without, SB3's per-step defaults.
    """
    recipe: dict[str, Any] = {
        "learning_rate": 3e-4,
        "actor_learning_rate": None,
        "policy_delay": 1,
        "warm_start_steps": 0,
        "max_grad_norm": None,
        "replay_buffer_class": None,
        "replay_buffer_kwargs": {},
    }
    if robot is not None:
        settings = _robot(robot)
        recipe.update(
            batch_size=settings["batch_size"],
            gamma=settings["gamma"],
            train_freq=(1, "episode"),
            gradient_steps=settings["gradient_steps"],
            learning_starts=0,
        )
    if not for_load:
        recipe["policy_kwargs"] = None
    return recipe


#: The methods :func:`recipe` knows, each a setting of the same classes.
METHODS = ("paper", "vanilla", "delayed_actor", "mixing", "resfit", "sgft", "q_guided")


def recipe(
    robot: str,
    method: str = "paper",
    *,
    offline_data: OfflineSource | list[OfflineSource] | str | pathlib.Path | None = None,
    buffer_size: int = 1_000_000,
    for_load: bool = False,
    algorithm: str = "SAC",
) -> dict[str, Any]:
    """Keyword arguments for fine-tuning ``robot``'s prior with ``method``:

    ================ ==========================================================================
    method           settings (the robot's K, batch size and γ unless stated)
    ================ ==========================================================================
    "paper"          :func:`paper_recipe`: the study's stabilisers
    "vanilla"        :func:`vanilla_recipe`: M = 1, one rate, no mixing, no warm start
    "delayed_actor"  vanilla + the study's delayed, slower actor (M = 20, actor lr 1e-5)
    "mixing"         vanilla + the study's D0 mixing (online fraction 0.5 → 1) and warm start
    "resfit"         ResFiT (its code's defaults): residual actor over the frozen prior, scale
                     0.1, zero-initialised last layer; critic lr 1e-4, actor lr 1e-6, the actor
                     every 4th critic step (UTD 4, one actor update per env step), τ 0.005,
                     3-step returns, 10k critic-only warm-up updates, constant 50/50
                     offline/online sampling, gradient norm 1.0, γ 0.99
    "sgft"           SGFT: the prior's frozen V_sim shapes the reward (r + γV(s′) − V(s)), H = 1
                     (every stored transition terminal), critic re-initialised, temperature
                     fixed at 0.01, no sim data, lr 3e-4, batch 256, γ 0.99, warm start 20
                     episodes of the prior, UTD 2
    "q_guided"       the paper recipe + batch online RL's implicit extraction (execute the
                     argmax-Q of N = 64 policy samples); add temporally correlated noise with
                     ``action_noise=ou_noise(action_dim)``
    ================ ==========================================================================

    Budgets that depend on the machine (K, N*, warm-up counts) are the published ones; a CPU
    benchmark scales them the same way for every method (``benchmarks/sim_to_sim.py``).
    ``algorithm``: "SAC" for every method; the stabilisers' methods also serve "TD3", "TQC",
    "CrossQ" (see :func:`paper_recipe`); "resfit" and "sgft" are SAC's.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method in ("resfit", "sgft") and algorithm != "SAC":
        raise ValueError(f"method {method!r} is written for SAC, got algorithm={algorithm!r}")
    settings = _robot(robot)
    episode = _EPISODE_STEPS[robot.lower()]
    if method == "paper":
        return paper_recipe(
            robot,
            offline_data=offline_data,
            buffer_size=buffer_size,
            for_load=for_load,
            algorithm=algorithm,
        )
    if method == "q_guided":
        out = paper_recipe(
            robot,
            offline_data=offline_data,
            buffer_size=buffer_size,
            for_load=for_load,
            algorithm=algorithm,
        )
        out["action_selection_samples"] = 64
        return out
    out = vanilla_recipe(robot, for_load=for_load)
    out["buffer_size"] = buffer_size
    if method == "delayed_actor":
        out.update(policy_delay=20, actor_learning_rate=1e-5)
    elif method == "mixing":
        out.update(
            warm_start_steps=settings["warm_start_steps"],
            replay_buffer_class=MixingReplayBuffer,
            replay_buffer_kwargs={
                "online_fraction": (0.5, 1.0, settings["mixing_steps"]),
                "offline_data": offline_data,
            },
        )
    elif method == "resfit":
        from sim2online_envs.agents.methods import RESFIT_RESIDUAL_SCALE, NStepMixingReplayBuffer

        out.update(
            learning_rate=1e-4,
            actor_learning_rate=1e-6,
            policy_delay=4,
            gradient_steps=4 * episode,
            tau=0.005,
            gamma=0.99,
            max_grad_norm=1.0,
            residual_scale=RESFIT_RESIDUAL_SCALE,
            critic_warmup_steps=10_000,
            warm_start_steps=settings["warm_start_steps"],
            replay_buffer_class=NStepMixingReplayBuffer,
            replay_buffer_kwargs={
                "online_fraction": 0.5,
                "offline_data": offline_data,
                "n_steps": 3,
                "gamma": 0.99,
            },
        )
    elif method == "sgft":
        out.update(
            learning_rate=3e-4,
            batch_size=256,
            gamma=0.99,
            gradient_steps=2 * episode,
            warm_start_steps=20 * episode,
            value_shaping=True,
            value_shaping_horizon=1,
            reset_critic_at_hand_off=True,
            ent_coef_at_hand_off=0.01,
            replay_buffer_class=None,
            replay_buffer_kwargs={},
        )
    return out


#: Episode length of each robot's task (steps), for the per-step update ratios above.
_EPISODE_STEPS = {"panda": 250, "go1": 1000, "racecar": 250}
