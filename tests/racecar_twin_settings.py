"""The race car twin tests' settings, shared by every test that drives RealRaceCar-v0's twin."""

#: Tolerances for a shared, loaded CI machine, where the test's own step loop can stall for
#: 100 ms (the real car's defaults are tighter, see the docs; the failsafe test sets 100 ms).
TWIN_SETTINGS = {
    "mocap_max_age": 0.25,
    "mocap_max_latency": 0.06,
    "status_timeout": 0.3,
    "failsafe_timeout_ms": 250,
    "watchdog_periods": 15.0,
}
