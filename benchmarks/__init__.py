"""Throughput benchmarks of sim2online-envs: ``python -m benchmarks.run [--quick]``."""

# Importing the package first sets MUJOCO_GL (EGL on headless Linux) before any benchmark
# module imports mujoco, which reads it once.
import sim2online_envs  # noqa: F401
