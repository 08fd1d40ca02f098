"""The Panda's twin: franky-sim for the arm and hand, the package's scene for the cube and camera.

* Arm and hand: :class:`TwinArmServer` starts :mod:`.twin_server` (franky-sim 1.0.4, the
  libfranka FR3 protocol) on a random 127.x.y.z address; the real franky driver connects to it.
* Scene: :class:`TwinScene` is the simulator's pick scene (:func:`sim2online_envs.sim.panda.
  scene_spec`) with ArUco-textured cube faces (:func:`sim2online_envs.sim.panda.
  add_marker_faces`, the simulator's own) and an occluder plate for fault tests. It follows the
  measured joints and gripper width of every read and simulates the cube, so the hand can push,
  grasp and lift it. The scene's arm is driven, not placed: its own joint servos track the
  measured joints along the interpolated path (with the velocity feed-forward that cancels the
  servos' damping lag), so contacts see a physically moving hand. Writing the joints directly
  at every physics step (what this did first) lets the contact solver's reaction on the hand be
  thrown away at the next write: a grasped cube crept out of the fingers while lifted. The arm
  is placed directly only where there is no path to follow: at the first read and the first read
  after :meth:`TwinScene.place_cube` (a reset). After a gap of more than
  :attr:`TwinScene.max_gap` (a motion nobody watched, e.g. a calibration pose, or a stalled
  host) the path is followed in that time, then the servos' remaining error is taken up.
* Camera: :class:`TwinCamera` renders the scene's D455 view at the camera's rate into a
  ``pyrealsense2.software_device``, which the real camera driver reads like a D455.
* The calibration file of the twin is written from the scene's camera (pose, field of view).

franky-sim's gripper closes to the commanded grasp width whatever is between its fingers (it
has no cube): its ``is_grasped`` is true after every grasp, so the twin's ``gripper_holding``
says "closed" more often than the real hand would (the task's grasp test also needs the cube at
the fingertips, which the scene decides).
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import select
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from sim2online_envs.hardware.base import ConnectionTimeoutError, HardwareError
from sim2online_envs.hardware.panda.arm import ArmSample, GripperSample
from sim2online_envs.hardware.panda.calibration import (
    Calibration,
    base_from_mujoco_camera,
    save_calibration,
)
from sim2online_envs.hardware.panda.config import PandaHardwareConfig
from sim2online_envs.hardware.panda.facts import HOME_QPOS
from sim2online_envs.hardware.panda.markers import CameraIntrinsics
from sim2online_envs.vision import center_square_crop

logger = logging.getLogger(__name__)

__all__ = ["PandaTwin", "TwinArmServer", "TwinCamera", "TwinScene"]


class TwinArmServer:
    """franky-sim in a child process on a loopback address (bounded start, always ended)."""

    def __init__(self, startup_timeout: float = 90.0):
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self.hostname = ""
        self.control_port = 0

    def start(self) -> None:
        args = [
            sys.executable,
            "-m",
            "sim2online_envs.hardware.panda.twin_server",
            "--hostname",
            "auto",
            "--initial-q",
            ",".join(f"{v:.6f}" for v in HOME_QPOS),
        ]
        self.process = subprocess.Popen(
            args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, text=True
        )
        ready, _, _ = select.select([self.process.stdout], [], [], self.startup_timeout)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.close()
            raise ConnectionTimeoutError(
                "franky-sim twin", f"did not report ready within {self.startup_timeout:g} s"
            )
        info = json.loads(line)
        self.hostname, self.control_port = info["hostname"], int(info["control_port"])
        if not self.hostname.startswith("127."):
            self.close()
            raise HardwareError("franky-sim twin", f"bound {self.hostname}, not loopback")

    def command(self, **message: Any) -> dict:
        """Send one control command (``cmd="reflex"``, ``"grasp_fail"``, ``"ping"``)."""
        with socket.create_connection((self.hostname, self.control_port), timeout=5.0) as sock:
            sock.sendall((json.dumps(message) + "\n").encode())
            reply = json.loads(sock.makefile("r").readline(4096))
        if not reply.get("ok"):
            raise HardwareError("franky-sim twin", f"refused {message}: {reply.get('error')}")
        return reply

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def close(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        try:
            if process.stdin is not None:
                process.stdin.close()
            process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(timeout=3.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=3.0)
        finally:
            if process.stdout is not None:
                process.stdout.close()


class TwinScene:
    """The pick scene following the measured arm, with the marker cube and an occluder."""

    def __init__(
        self,
        config: PandaHardwareConfig,
        width: int,
        height: int,
        sim_config: Any = None,
        hand_marker: tuple[int, float] | None = None,
    ):
        import mujoco

        from sim2online_envs.sim.panda import PandaSimConfig, add_marker_faces, scene_spec

        self.mujoco = mujoco
        self.sim_config = sim_config or PandaSimConfig()
        spec = scene_spec("cube", self.sim_config)
        spec.visual.global_.offwidth = max(int(width), spec.visual.global_.offwidth)
        spec.visual.global_.offheight = max(int(height), spec.visual.global_.offheight)
        # No shadow pass: it triples the cost of a full-size frame on a software renderer, and
        # the cube's corners are found more precisely without the hand's shadow on them.
        spec.visual.quality.shadowsize = 0
        if not getattr(self.sim_config, "cube_markers", False):
            add_marker_faces(spec, config.cube_size, config.marker_dictionary, config.marker_length)
        if hand_marker is not None:
            self._add_hand_marker(spec, config, *hand_marker)
        occluder = spec.worldbody.add_body(name="occluder", mocap=True, pos=[0, 0, -5])
        occluder.add_geom(
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=[0.06, 0.06, 0.004],
            rgba=[0.5, 0.5, 0.5, 1],
            contype=0,
            conaffinity=0,
        )
        self.model = spec.compile()
        self.data = mujoco.MjData(self.model)
        m = self.model
        self.arm_adr = np.array([m.joint(f"joint{i}").qposadr[0] for i in range(1, 8)])
        self.arm_dof = np.array([m.joint(f"joint{i}").dofadr[0] for i in range(1, 8)])
        self.arm_act = np.array([m.actuator(f"joint{i}").id for i in range(1, 8)])
        self.finger_adr = np.array([m.joint(n).qposadr[0] for n in ("finger_left", "finger_right")])
        self.finger_dof = np.array([m.joint(n).dofadr[0] for n in ("finger_left", "finger_right")])
        self.tcp_site = int(m.site("tcp").id)
        self.gripper_act = int(m.actuator("gripper").id)
        self.gripper_act_adr = int(m.actuator_actadr[self.gripper_act])
        self.object_adr = int(m.joint("object").qposadr[0])
        self.object_dof = int(m.joint("object").dofadr[0])
        self.camera_id = int(m.camera("d455").id)
        self.occluder_id = int(m.body("occluder").mocapid[0])
        self._servo_lead = self._position_servo_lead()
        self.lock = threading.Lock()
        self._q = HOME_QPOS.copy()
        self._width = 0.08
        self._last: float | None = None
        self._place_arm = True
        #: Distance (m) of the scene's TCP from the measured one at the last read.
        self.hand_error = 0.0
        self.data.qpos[self.arm_adr] = HOME_QPOS
        self.data.qpos[self.finger_adr] = 0.04
        self.data.act[self.gripper_act_adr] = 0.08
        mujoco.mj_forward(self.model, self.data)

    def _add_hand_marker(
        self, spec: Any, config: PandaHardwareConfig, marker_id: int, length: float
    ) -> None:
        """A calibration marker plate held at the TCP as ``calibration.marker_in_hand`` says."""
        import cv2

        from sim2online_envs.hardware.panda.calibration import marker_in_hand
        from sim2online_envs.robots.panda import TCP_OFFSET

        mujoco = self.mujoco
        side = length * 1.25  # the white border
        pixels = 250
        inner = round(pixels * length / side)
        gray = np.full((pixels, pixels), 255, np.uint8)
        start = (pixels - inner) // 2
        gray[start : start + inner, start : start + inner] = cv2.aruco.generateImageMarker(
            cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, config.marker_dictionary)),
            marker_id,
            inner,
        )
        rgb = cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
        texture = spec.add_texture(
            name="calibration_marker",
            type=mujoco.mjtTexture.mjTEXTURE_2D,
            width=pixels,
            height=pixels,
            nchannel=3,
        )
        texture.data = rgb.tobytes()
        material = spec.add_material(name="calibration_marker")
        material.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = "calibration_marker"
        frame = marker_in_hand()
        right, up = frame[:3, 0], frame[:3, 1]
        centre = np.array([0.0, 0.0, TCP_OFFSET]) + frame[:3, 3]  # the TCP in the hand frame
        half = side / 2
        corners = [
            centre - right * half + up * half,
            centre + right * half + up * half,
            centre + right * half - up * half,
            centre - right * half - up * half,
        ]
        mesh = spec.add_mesh(
            name="calibration_marker",
            uservert=np.asarray(corners).ravel().tolist(),
            userface=[0, 2, 1, 0, 3, 2],
            usertexcoord=[0, 0, 1, 0, 1, 1, 0, 1],
        )
        mesh.inertia = mujoco.mjtMeshInertia.mjMESH_INERTIA_SHELL
        spec.body("hand").add_geom(
            name="calibration_marker",
            type=mujoco.mjtGeom.mjGEOM_MESH,
            meshname="calibration_marker",
            material="calibration_marker",
            contype=0,
            conaffinity=0,
            mass=1e-5,
        )

    # -- scene control -------------------------------------------------------------------------

    #: Of a longer gap between reads, this much (s) is simulated: the arm follows the path from
    #: the last measured joints to the new ones in this time, then is set to the new ones.
    max_gap = 0.5

    def _position_servo_lead(self) -> np.ndarray:
        """kv / kp of each arm actuator: a position servo ``kp (ctrl - q) - kv dq`` tracks a
        moving reference ``r`` without lag when ``ctrl = r + (kv / kp) dr``."""
        m = self.model
        gain = m.actuator_gainprm[self.arm_act, 0]
        position = m.actuator_biasprm[self.arm_act, 1]
        if not np.allclose(position, -gain) or not (gain > 0).all():
            raise HardwareError(
                "Panda twin scene",
                "the scene's arm actuators joint1..joint7 must be position servos (the twin drives "
                "them toward the measured joints); build the scene with joint servos",
            )
        return -m.actuator_biasprm[self.arm_act, 2] / gain

    def place_cube(self, pos: np.ndarray, yaw: float) -> None:
        """Put the cube at ``pos`` (m) with ``yaw`` (rad); the next read places the arm."""
        with self.lock:
            self._place_arm = True
            adr, dof = self.object_adr, self.object_dof
            self.data.qpos[adr : adr + 3] = pos
            self.data.qpos[adr + 3 : adr + 7] = [math.cos(yaw / 2), 0, 0, math.sin(yaw / 2)]
            self.data.qvel[dof : dof + 6] = 0.0
            self.mujoco.mj_forward(self.model, self.data)

    def occlude(self, on: bool) -> None:
        """Put a plate between the camera and the cube (or take it away)."""
        with self.lock:
            if on:
                cam = self.data.cam_xpos[self.camera_id]
                cube = self.data.qpos[self.object_adr : self.object_adr + 3]
                spot = cam + 0.4 * (cube - cam)
                forward = (cube - cam) / np.linalg.norm(cube - cam)
                quat = np.zeros(4)
                self.mujoco.mju_quatZ2Vec(quat, forward)
                self.data.mocap_pos[self.occluder_id] = spot
                self.data.mocap_quat[self.occluder_id] = quat
            else:
                self.data.mocap_pos[self.occluder_id] = (0, 0, -5)
            self.mujoco.mj_forward(self.model, self.data)

    def truth(self) -> tuple[np.ndarray, np.ndarray]:
        """The cube's true centre (m) and orientation (w, x, y, z)."""
        with self.lock:
            adr = self.object_adr
            return self.data.qpos[adr : adr + 3].copy(), self.data.qpos[adr + 3 : adr + 7].copy()

    def follow(self, arm: ArmSample, gripper: GripperSample | None) -> None:
        """Advance the scene to now along the measured arm and hand (called at every read)."""
        mujoco, m, d = self.mujoco, self.model, self.data
        now = time.monotonic()
        q_new = np.asarray(arm.q, dtype=float)
        width_new = self._width if gripper is None else float(gripper.width)
        with self.lock:
            if self._last is None or self._place_arm:
                self._place(q_new, width_new)
            else:
                gap = now - self._last
                simulated = min(gap, self.max_gap)
                steps = round(simulated / m.opt.timestep)
                if steps == 0:
                    return  # the next read simulates this stretch too
                q_old, width_old = self._q, self._width
                lead = self._servo_lead * (q_new - q_old) / simulated
                for k in range(1, steps + 1):
                    alpha = k / steps
                    d.ctrl[self.arm_act] = q_old + alpha * (q_new - q_old) + lead
                    d.act[self.gripper_act_adr] = width_old + alpha * (width_new - width_old)
                    d.ctrl[self.gripper_act] = 0.0
                    mujoco.mj_step(m, d)
                d.ctrl[self.arm_act] = q_new
                if gap > self.max_gap:
                    # A motion nobody watched (a calibration pose, a stalled host): it has
                    # ended where the arm is now; take up the servos' remaining error.
                    d.qpos[self.arm_adr] = q_new
                    d.qvel[self.arm_dof] = 0.0
                    mujoco.mj_forward(m, d)
            self._last = now
            self._q, self._width = q_new, width_new
            tcp = d.site_xpos[self.tcp_site]
            self.hand_error = float(np.linalg.norm(tcp - np.asarray(arm.tip_pos)))

    def _place(self, q: np.ndarray, width: float) -> None:
        """Set the arm and fingers to the measured pose at rest (no path to follow)."""
        d = self.data
        d.qpos[self.arm_adr] = q
        d.qvel[self.arm_dof] = 0.0
        d.ctrl[self.arm_act] = q
        d.qpos[self.finger_adr] = width / 2
        d.qvel[self.finger_dof] = 0.0
        d.act[self.gripper_act_adr] = width
        d.ctrl[self.gripper_act] = 0.0
        self.mujoco.mj_forward(self.model, d)
        self._place_arm = False

    def snapshot(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with self.lock:
            return self.data.qpos.copy(), self.data.mocap_pos.copy(), self.data.mocap_quat.copy()

    def camera_calibration(self, width: int, height: int) -> Calibration:
        """The scene camera as a calibration (its true pose and field of view)."""
        with self.lock:
            pos = self.data.cam_xpos[self.camera_id].copy()
            rot = self.data.cam_xmat[self.camera_id].copy()
        fovy = float(self.model.cam_fovy[self.camera_id])
        return Calibration(
            CameraIntrinsics.from_fovy(width, height, fovy),
            base_from_mujoco_camera(pos, rot),
            center_square_crop(width, height),
            camera_serial=TwinCamera.SERIAL,
        )


class TwinCamera:
    """A ``pyrealsense2.software_device`` fed with the scene's D455 view at ``fps``."""

    SERIAL = "TWIN-D455"

    def __init__(self, scene: TwinScene, width: int, height: int, fps: int):
        import pyrealsense2 as rs

        self.scene = scene
        self.width, self.height, self.fps = width, height, fps
        self.device = rs.software_device()
        self.device.register_info(rs.camera_info.serial_number, self.SERIAL)
        self.device.register_info(rs.camera_info.name, "sim2online twin D455")
        self._sensor = self.device.add_sensor("RGB Camera")
        intr = rs.intrinsics()
        cal = scene.camera_calibration(width, height).intrinsics
        intr.width, intr.height = width, height
        intr.fx, intr.fy, intr.ppx, intr.ppy = cal.fx, cal.fy, cal.cx, cal.cy
        intr.model = rs.distortion.none
        intr.coeffs = [0.0] * 5
        stream = rs.video_stream()
        stream.type, stream.index, stream.uid = rs.stream.color, 0, 0
        stream.width, stream.height, stream.fps, stream.bpp = width, height, fps, 3
        stream.fmt = rs.format.rgb8
        stream.intrinsics = intr
        self._profile = self._sensor.add_video_stream(stream).as_video_stream_profile()
        self._rs = rs
        self.paused = threading.Event()
        self._stop = threading.Event()
        self._frames: collections.deque = collections.deque(maxlen=8)
        self.frames_sent = 0
        self.render_seconds: collections.deque = collections.deque(maxlen=200)
        self._thread = threading.Thread(target=self._run, name="twin-camera", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        mujoco = self.scene.mujoco
        model = self.scene.model
        data = mujoco.MjData(model)
        renderer = mujoco.Renderer(model, self.height, self.width)
        try:
            period = 1.0 / self.fps
            next_tick = time.monotonic()
            number = 0
            while not self._stop.is_set():
                next_tick += period
                delay = next_tick - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    next_tick = time.monotonic()
                if self.paused.is_set() or self._stop.is_set():
                    continue
                start, wall = time.monotonic(), time.time()
                qpos, mocap_pos, mocap_quat = self.scene.snapshot()
                data.qpos[:] = qpos
                data.mocap_pos[:] = mocap_pos
                data.mocap_quat[:] = mocap_quat
                mujoco.mj_kinematics(model, data)
                mujoco.mj_camlight(model, data)
                renderer.update_scene(data, camera=self.scene.camera_id)
                rgb = np.ascontiguousarray(renderer.render())
                self.render_seconds.append(time.monotonic() - start)
                self._send(rgb, wall, number)
                number += 1
        finally:
            renderer.close()

    def _send(self, rgb: np.ndarray, wall: float, number: int) -> None:
        rs = self._rs
        frame = rs.software_video_frame()
        frame.pixels = rgb
        frame.bpp = 3
        frame.stride = self.width * 3
        frame.timestamp = wall * 1000.0
        frame.domain = rs.timestamp_domain.system_time
        frame.frame_number = number
        frame.profile = self._profile
        self._frames.append(rgb)  # the device reads the pixels after this call returns
        self._sensor.on_video_frame(frame)
        self.frames_sent += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)


class PandaTwin:
    """Everything ``hardware="twin"`` runs: franky-sim, the scene, the camera, a calibration."""

    def __init__(
        self,
        config: PandaHardwareConfig,
        sim_config: Any = None,
        fps: int = 10,
        hand_marker: tuple[int, float] | None = None,
    ):
        if config.driver != "franky":
            raise ValueError(
                "the twin runs the franky driver only: panda-py's libfranka 0.9.2 speaks the "
                "Panda/FER protocol (5), franky-sim the FR3 protocol (10)"
            )
        self.config = config
        self.fps = fps
        self.hand_marker = hand_marker
        self.server = TwinArmServer()
        self.scene: TwinScene | None = None
        self.camera: TwinCamera | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="sim2online-panda-twin-")
        self.calibration_path = Path(self._tmp.name) / "calibration.json"
        self.rng = np.random.default_rng()

    def start(self) -> PandaHardwareConfig:
        """Start everything; return the config the real drivers connect with."""
        import dataclasses

        os.environ.setdefault("MUJOCO_GL", "egl")
        try:
            self.server.start()
            width, height = self.config.camera_width, self.config.camera_height
            self.scene = TwinScene(self.config, width, height, None, self.hand_marker)
            save_calibration(self.scene.camera_calibration(width, height), self.calibration_path)
            self.camera = TwinCamera(self.scene, width, height, self.fps)
        except BaseException:
            self.close()
            raise
        return dataclasses.replace(
            self.config,
            camera_max_age=max(self.config.camera_max_age, 4.0 / self.fps),
            robot_ip=self.server.hostname,
            camera_serial=TwinCamera.SERIAL,
            camera_fps=self.fps,
            calibration=str(self.calibration_path),
        )

    def reset_scene(self, options: dict[str, Any]) -> None:
        """Place the cube: ``object_pos`` / ``object_yaw`` options, else drawn like the sim."""
        cfg = self.scene.sim_config
        half = self.config.cube_size / 2
        options = dict(options)
        pos = options.pop("object_pos", None)
        yaw = options.pop("object_yaw", None)
        if options:
            raise ValueError(
                f"unknown reset options {sorted(options)}; twin takes object_pos, object_yaw"
            )
        if pos is None:
            xy = self.rng.uniform(cfg.object_xy_low, cfg.object_xy_high)
            pos = (xy[0], xy[1], half)
        if yaw is None:
            yaw = self.rng.uniform(-cfg.object_yaw_range, cfg.object_yaw_range)
        self.scene.occlude(False)
        self.scene.place_cube(np.asarray(pos, float), float(yaw))

    def close(self) -> None:
        if self.camera is not None:
            self.camera.close()
            self.camera = None
        self.server.close()
        self._tmp.cleanup()
