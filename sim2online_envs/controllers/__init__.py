"""Scripted controllers, one per robot: the baselines learned policies must beat, the demo's
drivers, and the source of recorded demonstrations (D0)."""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

__all__ = ["ScriptedPolicy"]


class ScriptedPolicy(abc.ABC):
    """Gives a callable ``controller(observation) -> action`` SB3's ``predict``, so that it can
    stand in for a trained policy (evaluation loops, recording, warm starts)."""

    @abc.abstractmethod
    def __call__(self, observation: Any) -> np.ndarray:
        """The action for ``observation``."""

    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, Any]:
        """SB3-style: the action for ``observation`` and the (unused) recurrent state."""
        del episode_start, deterministic
        return self(observation), state
