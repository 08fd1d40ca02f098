"""A robot module is the only place each fact about its robot is written.

Three kinds of checks: the readers (tasks, simulators and their compiled MuJoCo models, safety
limits, reset helpers, controllers) hold the robot module's values; the robot modules import
nothing heavy; and the distinctive literals of those facts (joint limits, home poses, workspace,
ids, ...) appear as code in no other source file of the package (docstrings may cite them).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import io
import re
import subprocess
import sys
import tokenize
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from sim2online_envs import robots
from sim2online_envs.robots import go1, panda, racecar
from sim2online_envs.robots.spec import batch_shape

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sim2online_envs"
ASSETS = PACKAGE / "assets"


def safety_module() -> ModuleType:
    """Where the command limits live: the step loop's module, else the wrapper (while moving)."""
    for name in ("sim2online_envs.safety", "sim2online_envs.wrappers.safety"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "Go1Limits"):
            return module
    pytest.fail("no module defines the command limits (Go1Limits)")


# -- the registry --------------------------------------------------------------------------------


def test_registry_is_built_from_the_robot_modules() -> None:
    assert robots.NAMES == ("panda", "go1", "racecar")
    for name, module in robots.ROBOT_MODULES.items():
        assert name == module.NAME
        assert robots.SIM_IDS[name] == module.SIM_ID
        assert robots.REAL_IDS[name] == module.REAL_ID
        assert module.SIM_ID.startswith("Sim") and module.REAL_ID.startswith("Real")
        assert module.SIM_ID[3:] == module.REAL_ID[4:]
        assert robots.resolve(name.upper()) == name
        for alias in module.ALIASES:
            assert robots.resolve(alias) == name
            assert robots.get(alias) is module
    assert robots.resolve("car") == "racecar" and robots.resolve("franka") == "panda"
    with pytest.raises(ValueError, match="choose one of"):
        robots.resolve("spot")


def test_entry_points_and_controllers_exist() -> None:
    for module in robots.ROBOT_MODULES.values():
        path, _, cls = module.SIM_ENTRY_POINT.partition(":")
        assert hasattr(importlib.import_module(path), cls)
        assert hasattr(importlib.import_module(module.CONTROLLER_MODULE), "make_controller")


@pytest.mark.parametrize("module", [go1, panda, racecar], ids=lambda m: m.NAME)
def test_registered_ids_are_the_robot_modules(module: ModuleType) -> None:
    import gymnasium as gym

    import sim2online_envs  # noqa: F401  (registers the ids)

    spec = gym.spec(module.SIM_ID)
    assert spec.entry_point == module.SIM_ENTRY_POINT


# -- robot modules are light ---------------------------------------------------------------------


def test_robot_modules_import_only_numpy_and_the_standard_library() -> None:
    for path in sorted((PACKAGE / "robots").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                allowed = (
                    top in ("numpy", "__future__")
                    or top in sys.stdlib_module_names
                    or name.startswith("sim2online_envs.robots")
                )
                assert allowed, f"{path.name} imports {name}"


def test_importing_the_robot_modules_loads_no_simulator() -> None:
    code = (
        "import sys; import sim2online_envs.robots; "
        "heavy = [m for m in ('mujoco', 'numba', 'cv2', 'torch', 'stable_baselines3') "
        "if m in sys.modules]; print(heavy)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


# -- state and command tables --------------------------------------------------------------------


def _docstring_rows(doc: str) -> dict[str, list[tuple[str, str]]]:
    """Each ``key`` row of the docstring's reST tables: key -> [(shape, rest of the row)]."""
    rows: dict[str, list[tuple[str, str]]] = {}
    for line in doc.splitlines():
        match = re.match(r"^``(\w+)``\s+(\([^)]*\))(.*)$", line)
        if match:
            rows.setdefault(match.group(1), []).append((match.group(2), match.group(3)))
    return rows


@pytest.mark.parametrize("module", [go1, panda, racecar], ids=lambda m: m.NAME)
def test_docstring_tables_list_the_keys(module: ModuleType) -> None:
    rows = _docstring_rows(module.__doc__)
    documented = {key: [shape for shape, _ in found] for key, found in rows.items()}
    expected: dict[str, list[str]] = {}
    for table in (module.STATE_KEYS, module.COMMAND_KEYS):
        for key, spec in table.items():
            expected.setdefault(key, []).append(batch_shape(spec))
    assert documented == expected
    for table in (module.STATE_KEYS, module.COMMAND_KEYS):
        for spec in table.values():
            np.dtype(spec.dtype)  # a real dtype name


# -- Go1: task, simulator, MJCF, safety ----------------------------------------------------------


def test_go1_task_reads_the_robot_module() -> None:
    from sim2online_envs.tasks import go1 as task_module

    for name in ("JOINT_NAMES", "FOOT_NAMES", "HOME_JOINT_POS", "JOINT_LOWER", "JOINT_UPPER"):
        assert getattr(task_module, name) is getattr(go1, name), name
    assert task_module.TORQUE_LIMITS is go1.TORQUE_LIMITS
    task = task_module.Go1JoystickTask()
    assert task.robot == go1.NAME
    assert task.control_dt == go1.CONTROL_DT
    assert task.action_space.shape == (go1.NUM_JOINTS,)
    middle = 0.5 * (go1.JOINT_LOWER + go1.JOINT_UPPER)
    half = 0.5 * (go1.JOINT_UPPER - go1.JOINT_LOWER) * task.config.soft_joint_limit_factor
    np.testing.assert_array_equal(task.soft_lower, middle - half)
    np.testing.assert_array_equal(task.soft_upper, middle + half)
    command = task.command(np.zeros((1, 12)), {}, {})
    np.testing.assert_array_equal(command["joint_targets"][0], go1.HOME_JOINT_POS)
    assert set(command) == set(go1.COMMAND_KEYS)


def test_go1_model_is_written_from_the_robot_module() -> None:
    from sim2online_envs.sim.go1 import load_model

    model = load_model()
    joints = [model.joint(name).id for name in go1.JOINT_NAMES]
    actuators = [model.actuator(name.removesuffix("_joint")).id for name in go1.JOINT_NAMES]
    np.testing.assert_array_equal(model.jnt_range[joints, 0], go1.JOINT_LOWER)
    np.testing.assert_array_equal(model.jnt_range[joints, 1], go1.JOINT_UPPER)
    np.testing.assert_array_equal(model.actuator_trnid[actuators, 0], joints)
    np.testing.assert_allclose(
        model.actuator_ctrlrange[actuators],
        np.stack([go1.JOINT_LOWER, go1.JOINT_UPPER], 1),
        0,
        1e-12,
    )
    np.testing.assert_array_equal(model.actuator_gainprm[actuators, 0], go1.KP)
    np.testing.assert_array_equal(model.actuator_biasprm[actuators, 1], -go1.KP)
    np.testing.assert_array_equal(model.actuator_biasprm[actuators, 2], -go1.KD)
    np.testing.assert_array_equal(model.actuator_forcerange[actuators, 1], go1.TORQUE_LIMITS)
    np.testing.assert_array_equal(model.actuator_forcerange[actuators, 0], -go1.TORQUE_LIMITS)
    assert model.jnt_limited[joints].all() and model.actuator_forcelimited[actuators].all()
    home = model.key("home")
    np.testing.assert_array_equal(home.qpos[7:], go1.HOME_JOINT_POS)
    np.testing.assert_array_equal(home.ctrl, go1.HOME_JOINT_POS)
    assert home.qpos[2] == go1.HOME_TRUNK_HEIGHT
    feet = [model.geom(f"{leg}_foot").id for leg in go1.FOOT_NAMES]
    np.testing.assert_array_equal(model.geom_size[feet, 0], go1.FOOT_RADIUS)


def test_go1_leg_kinematics_match_the_model() -> None:
    """The robot module's kinematics (the height estimate of the safety limits and the real
    robot) put the feet where the MJCF does, for the home pose and random poses."""
    import mujoco

    from sim2online_envs.sim.go1 import load_model

    model = load_model()
    data = mujoco.MjData(model)
    rng = np.random.default_rng(0)
    poses = [go1.HOME_JOINT_POS] + [rng.uniform(go1.JOINT_LOWER, go1.JOINT_UPPER) for _ in range(5)]
    for joint_pos in poses:
        data.qpos[:] = 0.0
        data.qpos[3] = 1.0
        data.qpos[7:] = joint_pos
        mujoco.mj_kinematics(model, data)
        trunk = model.body("trunk").id
        sites = [model.site(f"{leg}_foot").id for leg in go1.FOOT_NAMES]
        in_trunk = (data.site_xpos[sites] - data.xpos[trunk]) @ data.xmat[trunk].reshape(3, 3)
        np.testing.assert_allclose(go1.feet_in_trunk(joint_pos[None])[0], in_trunk, atol=1e-12)
    # at the home keyframe the lowest foot touches the floor: the height estimate is exact
    height = go1.trunk_height(go1.HOME_JOINT_POS[None], np.array([[1.0, 0.0, 0.0, 0.0]]))
    mujoco.mj_resetDataKeyframe(model, data, model.key("home").id)
    mujoco.mj_kinematics(model, data)
    sites = [model.site(f"{leg}_foot").id for leg in go1.FOOT_NAMES]
    lowest = data.site_xpos[sites, 2].min() - go1.FOOT_RADIUS
    assert height[0] == pytest.approx(data.qpos[2] - lowest, abs=1e-9)


def test_go1_xml_is_no_second_source() -> None:
    root = ET.parse(ASSETS / "go1.xml").getroot()
    for element in root.iter("joint"):
        assert "range" not in element.attrib, element.attrib
    for element in root.iter("position"):
        for attribute in ("kp", "kv", "forcerange", "ctrlrange"):
            assert attribute not in element.attrib, element.attrib
    for element in root.iter("key"):
        assert "qpos" not in element.attrib and "ctrl" not in element.attrib


def test_go1_simulator_defaults_are_the_robot_module() -> None:
    from sim2online_envs.sim.go1 import Go1VectorBackend

    signature = inspect.signature(Go1VectorBackend.__init__)
    assert signature.parameters["control_dt"].default == go1.CONTROL_DT


def test_go1_safety_limits_read_the_robot_module() -> None:
    safety = safety_module()
    limits = safety.Go1Limits()
    np.testing.assert_array_equal(limits.joint_lower, go1.JOINT_LOWER)
    np.testing.assert_array_equal(limits.joint_upper, go1.JOINT_UPPER)
    assert limits.margin == go1.SAFETY_JOINT_MARGIN
    assert limits.max_target_change == go1.SAFETY_MAX_TARGET_CHANGE
    assert limits.max_tilt == go1.SAFETY_MAX_TILT
    assert limits.min_height == go1.SAFETY_MIN_HEIGHT
    rng = np.random.default_rng(1)
    joint_pos = rng.uniform(go1.JOINT_LOWER, go1.JOINT_UPPER, (3, 12))
    quat = rng.normal(size=(3, 4))
    quat /= np.linalg.norm(quat, axis=1, keepdims=True)
    np.testing.assert_array_equal(
        safety.go1_trunk_height(joint_pos, quat), go1.trunk_height(joint_pos, quat)
    )


# -- Panda ---------------------------------------------------------------------------------------


def test_panda_task_reads_the_robot_module() -> None:
    from sim2online_envs.tasks.panda import STATE_HIGH, PandaPickTask, PandaTaskConfig

    config = PandaTaskConfig()
    assert config.workspace_low == panda.WORKSPACE_LOW
    assert config.workspace_high == panda.WORKSPACE_HIGH
    assert config.max_tip_step == panda.MAX_TIP_STEP
    assert config.max_target_lead == panda.MAX_TARGET_LEAD
    assert config.control_dt == panda.CONTROL_DT
    assert config.image_size == panda.CAMERA.image_size
    assert STATE_HIGH[3] == np.float32(panda.MAX_GRIPPER_OPENING)
    assert PandaPickTask.robot == panda.NAME


def test_panda_scene_is_written_from_the_robot_module() -> None:
    from sim2online_envs.sim.panda import PandaSimConfig, build_scene

    config = PandaSimConfig()
    assert (config.camera_pos, config.camera_target) == (panda.CAMERA.pos, panda.CAMERA.target)
    assert (config.camera_fovy, config.image_size) == (panda.CAMERA.fovy, panda.CAMERA.image_size)
    assert config.control_dt == panda.CONTROL_DT
    impedance = build_scene("cube")  # the default arm control: the real Cartesian impedance
    motors = [impedance.actuator(name).id for name in panda.ARM_JOINT_NAMES]
    np.testing.assert_array_equal(impedance.actuator_ctrlrange[motors, 1], panda.ARM_TORQUE_LIMITS)
    tcp = [impedance.actuator(f"tcp_{axis}").id for axis in "xyz"]
    assert list(impedance.actuator_gainprm[tcp, 0]) == [panda.IMPEDANCE_TRANSLATIONAL_STIFFNESS] * 3
    model = build_scene("cube", PandaSimConfig(arm_control="joint_servo"))
    arm = [model.joint(name).id for name in panda.ARM_JOINT_NAMES]
    servos = [model.actuator(name).id for name in panda.ARM_JOINT_NAMES]
    np.testing.assert_array_equal(model.jnt_range[arm, 0], panda.ARM_JOINT_LOWER)
    np.testing.assert_array_equal(model.jnt_range[arm, 1], panda.ARM_JOINT_UPPER)
    np.testing.assert_array_equal(model.actuator_forcerange[servos, 1], panda.ARM_TORQUE_LIMITS)
    np.testing.assert_allclose(
        model.actuator_ctrlrange[servos],
        np.stack([panda.ARM_JOINT_LOWER, panda.ARM_JOINT_UPPER], 1),
        rtol=0,
        atol=1e-12,
    )
    fingers = [model.joint(name).id for name in panda.FINGER_JOINT_NAMES]
    np.testing.assert_array_equal(model.jnt_range[fingers], [[0.0, panda.FINGER_TRAVEL]] * 2)
    gripper = model.actuator("gripper").id
    assert model.actuator_ctrlrange[gripper, 1] == 2 * panda.FINGER_SPEED
    assert model.actuator_actrange[gripper, 1] == panda.MAX_GRIPPER_OPENING
    assert model.actuator_forcerange[gripper, 1] == panda.GRASP_FORCE
    np.testing.assert_array_equal(model.site("tcp").pos, [0.0, 0.0, panda.TCP_OFFSET])
    camera = model.camera(panda.CAMERA.name)
    assert camera.fovy[0] == panda.CAMERA.fovy
    np.testing.assert_array_equal(camera.pos, panda.CAMERA.pos)


def test_panda_xml_is_no_second_source() -> None:
    root = ET.parse(ASSETS / "panda.xml").getroot()
    for element in root.iter("joint"):
        assert "range" not in element.attrib, element.attrib
    for tag in ("position", "general"):
        for element in root.iter(tag):
            for attribute in ("forcerange", "ctrlrange", "actrange"):
                assert attribute not in element.attrib, element.attrib


def test_panda_safety_and_reset_read_the_robot_module() -> None:
    safety = safety_module()
    limits = safety.PandaLimits()
    assert tuple(limits.workspace_low) == panda.SAFETY_WORKSPACE_LOW
    assert tuple(limits.workspace_high) == panda.SAFETY_WORKSPACE_HIGH
    assert limits.max_step == panda.SAFETY_MAX_STEP
    assert limits.max_gripper_force == panda.SAFETY_MAX_GRIPPER_FORCE
    from sim2online_envs.wrappers import reset_prompt

    assert reset_prompt.RESET_INSTRUCTIONS[panda.NAME] == panda.RESET_INSTRUCTIONS
    np.testing.assert_array_equal(reset_prompt.PandaHomeReset().home, panda.HOME_TIP_POS)


def test_panda_controller_reads_the_robot_module() -> None:
    from sim2online_envs.controllers.panda import ScriptedPickConfig

    assert ScriptedPickConfig().max_tip_step == panda.MAX_TIP_STEP


# -- race car ------------------------------------------------------------------------------------


def test_racecar_task_simulator_and_controller_read_the_robot_module() -> None:
    from sim2online_envs.controllers.racecar import ParkingController
    from sim2online_envs.sim.racecar import CarParams, RaceCarVectorBackend
    from sim2online_envs.tasks.racecar import RaceCarTask, RaceCarTaskConfig

    config = RaceCarTaskConfig()
    assert config.max_steering == racecar.MAX_STEERING
    assert config.arena_half_size == racecar.ARENA_HALF_SIZE
    assert config.control_dt == racecar.CONTROL_DT
    assert config.success_radius == racecar.PARKING_RADIUS
    assert config.start_distance_range == racecar.START_DISTANCE_RANGE
    assert RaceCarTask.robot == racecar.NAME
    params = CarParams()
    assert (params.lf, params.lr, params.mass) == (racecar.LF, racecar.LR, racecar.MASS)
    assert (params.length, params.width) == (racecar.BODY_LENGTH, racecar.BODY_WIDTH)
    assert params.inertia_z == racecar.INERTIA_Z
    assert params.max_steering == racecar.MAX_STEERING
    assert params.max_steering_rate == racecar.MAX_STEERING_RATE
    assert ParkingController().max_steering == racecar.MAX_STEERING
    defaults = inspect.signature(RaceCarVectorBackend.__init__).parameters
    assert defaults["control_dt"].default == racecar.CONTROL_DT
    assert defaults["arena_half_size"].default == racecar.ARENA_HALF_SIZE
    assert tuple(defaults["start_distance_range"].default) == racecar.START_DISTANCE_RANGE
    assert defaults["goal_radius"].default == racecar.PARKING_RADIUS


def test_racecar_arena_test_is_the_robot_modules() -> None:
    from sim2online_envs.tasks.racecar import RaceCarTask

    half = racecar.ARENA_HALF_SIZE
    pose = np.array(
        [[0.0, 0.0, 0.0], [half + 0.1, 0.0, 0.0], [0.0, -half - 0.1, 1.0], [half, -half, 0.0]]
    )
    expected = np.array([False, True, True, False])
    np.testing.assert_array_equal(racecar.out_of_arena(pose), expected)
    task = RaceCarTask()
    state = {"pose": pose, "velocity": np.zeros((4, 3))}
    task_state = task.initial_task_state(state, [np.random.default_rng(i) for i in range(4)])
    np.testing.assert_array_equal(task.info(state, task_state)["out_of_arena"], expected)
    limits = safety_module().RaceCarLimits()
    assert tuple(limits.arena_low) == racecar.SAFETY_ARENA_LOW
    assert tuple(limits.arena_high) == racecar.SAFETY_ARENA_HIGH
    assert limits.max_speed == racecar.SAFETY_MAX_SPEED
    assert limits.outside_max_speed == racecar.SAFETY_OUTSIDE_MAX_SPEED
    if hasattr(limits, "abort_reasons"):  # the step loop's batched limits
        flagged = np.asarray(limits.abort_reasons(state)) != ""
    else:  # the wrapper's, one world at a time
        flagged = [limits.abort_reason({"pose": row[None]}) is not None for row in pose]
    np.testing.assert_array_equal(flagged, expected)


def test_racecar_reset_reads_the_robot_module() -> None:
    from sim2online_envs.wrappers import reset_prompt

    assert reset_prompt.RESET_INSTRUCTIONS[racecar.NAME] == racecar.RESET_INSTRUCTIONS
    assert reset_prompt.RESET_INSTRUCTIONS[go1.NAME] == go1.RESET_INSTRUCTIONS
    drive_back = reset_prompt.DriveBackReset()
    assert tuple(drive_back.home) == racecar.RESET_HOME
    assert drive_back.tolerance == racecar.RESET_HOME_TOLERANCE
    assert drive_back.turning_radius == racecar.RESET_TURNING_RADIUS
    full_lock = (racecar.LF + racecar.LR) / np.tan(racecar.MAX_STEERING)
    assert full_lock < racecar.RESET_TURNING_RADIUS


# -- the facts are written nowhere else ----------------------------------------------------------

#: Distinctive numbers (absolute values) of robot facts: written in a robot module only.
FACT_NUMBERS: dict[float, str] = {
    **{value: "go1 joint limits" for value in (0.863, 0.686, 4.501, 2.818, 0.888)},
    23.7: "go1 torque limits",
    35.55: "go1 torque limits",
    0.1881: "go1 hip offsets",
    0.04675: "go1 hip offsets",
    0.2875: "go1 home trunk height",
    **{value: "panda joint limits" for value in (2.8973, 1.7628, 3.0718, 0.0698, 3.7525, 0.0175)},
    **{value: "panda home posture" for value in (0.25943, 2.43148, 2.17205)},
    0.1034: "panda TCP offset",
    0.4189: "race car steering limit",
    0.15875: "race car geometry",
    0.17145: "race car geometry",
    0.04712: "race car yaw inertia",
}
#: Distinctive sequences of numbers (a tuple or list literal, signs included).
FACT_SEQUENCES: dict[tuple[float, ...], str] = {
    (0.0, 0.9, -1.8): "go1 home pose",
    (0.30, -0.30, 0.015): "panda workspace",
    (0.68, 0.30, 0.35): "panda workspace",
    (0.45, 0.0, 0.30): "panda home tip",
    (1.05, 0.15, 0.38): "panda camera pose",
    (0.48, 0.0, 0.14): "panda camera target",
}
#: String facts: the env ids and entry points (an exact string literal, not a docstring).
FACT_STRINGS: dict[str, str] = {
    value: f"{module.NAME} ids"
    for module in robots.ROBOT_MODULES.values()
    for value in (module.SIM_ID, module.REAL_ID, module.SIM_ENTRY_POINT)
}
#: Files the lead is moving onto the robot modules, and the facts each still writes. An entry
#: that no longer matches fails too: delete it once the file imports its facts.
PENDING: dict[str, set[str]] = {}
#: Where the package's source lives (the repository's folders that install as subpackages).
SOURCE_DIRS = ("sim2online_envs", "wrappers", "hardware", "agents")


def _facts_in(source: str) -> dict[str, list[int]]:
    """Fact label -> lines where ``source`` writes it as code (comments, docstrings excluded)."""
    found: dict[str, list[int]] = {}
    numbers: list[tuple[float, int]] = []  # the current run of a literal sequence
    negative = False
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    for token in tokens:
        if token.type == tokenize.NUMBER:
            try:
                value = float(token.string.replace("_", ""))
            except ValueError:  # complex or other literal
                numbers, negative = [], False
                continue
            label = FACT_NUMBERS.get(abs(value))
            if label is not None:
                found.setdefault(label, []).append(token.start[0])
            numbers.append((-value if negative else value, token.start[0]))
            negative = False
            for sequence, label in FACT_SEQUENCES.items():
                tail = tuple(v for v, _ in numbers[-len(sequence) :])
                if tail == sequence:
                    found.setdefault(label, []).append(token.start[0])
        elif token.type == tokenize.OP and token.string == "-":
            negative = True
        elif token.type == tokenize.OP and token.string in ",()[]":
            negative = False
        elif token.type in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT):
            pass
        elif token.type == tokenize.STRING:
            numbers, negative = [], False
            try:
                value = ast.literal_eval(token.string)
            except (ValueError, SyntaxError):
                continue
            if isinstance(value, str) and value in FACT_STRINGS:
                found.setdefault(FACT_STRINGS[value], []).append(token.start[0])
        else:
            numbers, negative = [], False
    return found


def test_fact_scanner_finds_literals_and_ignores_docstrings() -> None:
    source = (
        '"""Limits -0.863 ... 0.863 and (0.30, -0.30, 0.015) in a docstring."""\n'
        "LOWER = (-0.863, -0.686)  # joint limits\n"
        "BOX = [0.30,\n  -0.30, 0.015]\n"
        "ID = 'SimGo1-v0'\n"
        "OTHER = (0.45, 1.0, 0.30)\n"
    )
    assert _facts_in(source) == {
        "go1 joint limits": [2, 2],
        "panda workspace": [4],
        "go1 ids": [5],
    }


def test_robot_facts_are_written_only_in_robot_modules() -> None:
    offenders: dict[str, dict[str, list[int]]] = {}
    for folder in SOURCE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative.startswith("sim2online_envs/robots/") or "/." in relative:
                continue
            found = _facts_in(path.read_text())
            if found:
                offenders[relative] = found
    unexpected = {
        path: {label: lines for label, lines in found.items() if label not in PENDING.get(path, ())}
        for path, found in offenders.items()
    }
    unexpected = {path: found for path, found in unexpected.items() if found}
    assert not unexpected, (
        "robot facts written outside sim2online_envs/robots (import them from the robot "
        f"module instead): {unexpected}"
    )
    stale = {
        path: sorted(labels - set(offenders.get(path, {})))
        for path, labels in PENDING.items()
        if (ROOT / path).exists() and labels - set(offenders.get(path, {}))
    }
    assert not stale, f"these files read their facts now: remove them from PENDING: {stale}"
