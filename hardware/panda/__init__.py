"""The real Franka Panda / FR3: arm and hand (franky or panda-py), D455 camera, ArUco cube, twin.

Importing this package needs none of the hardware libraries: each driver imports its library
when it connects. ``RealPandaEnv`` (``gym.make("RealPanda-v0")``) is in :mod:`.env`.
"""
