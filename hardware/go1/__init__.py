"""The real Unitree Go1 over unitree_legged_sdk's low-level UDP, and its twin on loopback.

``config`` (connection settings), ``protocol`` (the wire codec), ``estimator`` (body velocity
and foot states from what the robot measures), ``driver`` (the SDK loop), ``backend`` (the
RealBackend), ``twin`` (the robot's controller over MuJoCo), ``env`` (RealGo1Env) and
``check`` (``sim2online check go1``). Importing this package needs neither the SDK nor MuJoCo;
the modules that need them import them.
"""
