"""Env backends for the rollout loop: envs in this process, or spread over worker processes.

A backend is made from an env factory (``make_env()``, picklable: it is sent to workers) and a
view (``view(env, obs)``, the raw observation the loop gets after each reset and step). A step is
sent (``send_step``) and its results received later (``receive_step``), so the loop can encode
one group of envs' frames while the workers render the next group's. Any env
with ``reset(seed=) -> obs`` and ``step(action) -> (obs, reward, done, info)`` fits, so another
task family needs only its factory (``task_env`` makes both families' envs). Neither MuJoCo nor
torch is imported here: the task's env module is imported when the first env is made, in
whichever process makes it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from pipeline.envs.families import DMC, family
from pipeline.envs.gl import egl_gpus, use_egl_device
from pipeline.errors import ConfigError
from pipeline.rl.rollouts import Array
from pipeline.rl.workers import PipeWorkers

View = Callable[[Any, Array], Any]
# Per slot: the view after the step, the reward, the env's success signal, and whether the
# episode ended there before its horizon (info["terminated"]: mj_envs' pen when it falls).
StepResult = tuple[list[Any], list[float], list[bool], list[bool]]


def task_env(task: str, distractors: Any = None, **kwargs: Any) -> Any:
    """The task's env (AdroitEnv or DMCEnv) for sampling: the loop owns the horizon, so the
    env's own limit is off. Distractors (a DistractorSpec) exist for Adroit scenes only."""
    if family(task) == DMC:
        if distractors is not None:
            raise ConfigError(f"{task}: visual distractors exist for the Adroit tasks only. "
                              "Fix: DISTRACTORS=0")
        from pipeline.envs.dmc import DMCEnv

        return DMCEnv(task, horizon=10**9, **kwargs)
    from pipeline.envs.adroit import AdroitEnv

    return AdroitEnv(task, horizon=10**9, distractors=distractors, **kwargs)


adroit_env = task_env  # its former name, for callers written when Adroit was the only family


def env_vector(env: Any, obs: Array) -> Array:
    """The env's own observation vector (state mode)."""
    return obs


def camera_view(env: Any, obs: Array) -> dict[str, Any]:
    """Every camera's frame and the hand's proprioception (vision modes)."""
    return {"frames": env.render_all(), "proprio": env.proprio()}


def recorded_view(env: Any, obs: Array) -> dict[str, Any]:
    """``camera_view`` plus the simulator state and low-dimensional observation, for storing."""
    return {**camera_view(env, obs), "state": np.concatenate([env.data.qpos, env.data.qvel]),
            "obs": env.observation()}


class LocalEnvs:
    """``size`` envs in this process, made on first use."""

    def __init__(self, make_env: Callable[[], Any], size: int, view: View = env_vector) -> None:
        self.make_env, self.size, self.view = make_env, size, view
        self.envs: list[Any] = []
        self._sent: deque[tuple[list[int], StepResult]] = deque()

    def _env(self, slot: int) -> Any:
        while len(self.envs) <= slot:
            self.envs.append(self.make_env())
        return self.envs[slot]

    def reset(self, slots: Sequence[int], seeds: Sequence[int]) -> list[Any]:
        out = []
        for slot, seed in zip(slots, seeds, strict=True):
            env = self._env(slot)
            out.append(self.view(env, env.reset(seed=seed)))
        return out

    def step(self, slots: Sequence[int], actions: Array) -> StepResult:
        observations, rewards, success, ended = [], [], [], []
        for slot, action in zip(slots, actions, strict=True):
            env = self.envs[slot]
            obs, reward, _, info = env.step(action)
            observations.append(self.view(env, obs))
            rewards.append(reward)
            success.append(bool(info.get("success", False)))
            ended.append(bool(info.get("terminated", False)))
        return observations, rewards, success, ended

    def send_step(self, slots: Sequence[int], actions: Array) -> None:
        """Step now (there is no one to overlap with); ``receive_step`` hands the results over."""
        self._sent.append((list(slots), self.step(slots, actions)))

    def receive_step(self, slots: Sequence[int]) -> StepResult:
        return _oldest(self._sent, slots)

    def close(self) -> None:
        for env in self.envs:
            env.close()
        self.envs = []


def _serve(conn: Connection, make_env: Callable[[], Any], size: int, view: View,
           worker: int = 0, gpus: int = 0) -> None:
    use_egl_device(worker, gpus)  # before the envs make their GL contexts
    envs = LocalEnvs(make_env, size, view)
    try:
        while (msg := conn.recv()) is not None:
            kind, slots, payload = msg
            conn.send(envs.reset(slots, payload) if kind == "reset" else envs.step(slots, payload))
    finally:
        envs.close()
        conn.close()


def _oldest(sent: deque[tuple[list[int], Any]], slots: Sequence[int]) -> Any:
    """The oldest step sent, which must be the one for ``slots``: results come back in order."""
    if not sent or sent[0][0] != list(slots):
        raise RuntimeError(f"receive_step({list(slots)}) but the oldest step sent is for "
                           f"{sent[0][0] if sent else 'nothing'}. Fix: receive steps in the order they were sent")
    return sent.popleft()[1]


class WorkerEnvs:
    """``size`` envs spread round-robin over ``workers`` processes.

    Only actions go out and views come back, so the caller can batch its own per-step work
    (encoding every env's frame at once) while the workers render in parallel; with steps sent
    for one group of slots and received later, that work overlaps the rendering too.
    ``seconds`` adds up the time spent waiting for the workers.
    """

    def __init__(self, make_env: Callable[[], Any], size: int, workers: int = 2,
                 view: View = camera_view) -> None:
        self.size = size
        workers = max(1, min(workers, size))
        self.where = [(s % workers, s // workers) for s in range(size)]  # slot -> (worker, local)
        counts = [sum(1 for w, _ in self.where if w == worker) for worker in range(workers)]
        gpus = egl_gpus()  # render worker i on GPU i % gpus (EGL on several GPUs)
        self.workers = PipeWorkers(_serve, [(make_env, n, view, worker, gpus)
                                            for worker, n in enumerate(counts)])
        self.seconds = 0.0
        # Per step sent and not yet received: its slots and which of them each worker holds.
        self._sent: deque[tuple[list[int], dict[int, list[int]]]] = deque()

    def reset(self, slots: Sequence[int], seeds: Sequence[int]) -> list[Any]:
        if self._sent:
            raise RuntimeError("reset while steps are still to be received. Fix: receive "
                               "every step sent before resetting")
        return self._receive("reset", slots, self._send("reset", slots, seeds))

    def step(self, slots: Sequence[int], actions: Array) -> StepResult:
        self.send_step(slots, actions)
        return self.receive_step(slots)

    def send_step(self, slots: Sequence[int], actions: Array) -> None:
        self._sent.append((list(slots), self._send("step", slots, list(actions))))

    def receive_step(self, slots: Sequence[int]) -> StepResult:
        replies = self._receive("step", slots, _oldest(self._sent, slots))
        return ([r[0] for r in replies], [r[1] for r in replies], [r[2] for r in replies],
                [r[3] for r in replies])

    def _send(self, kind: str, slots: Sequence[int], payload: Sequence[Any]) -> dict[int, list[int]]:
        """Send each slot's item to its worker; returns each worker's slots, in order."""
        per_worker: dict[int, list[tuple[int, int, Any]]] = {}
        for slot, item in zip(slots, payload, strict=True):
            worker, local = self.where[slot]
            per_worker.setdefault(worker, []).append((slot, local, item))
        for worker, entries in per_worker.items():
            self.workers.conns[worker].send(
                (kind, [local for _, local, _ in entries], [item for _, _, item in entries]))
        return {worker: [slot for slot, _, _ in entries] for worker, entries in per_worker.items()}

    def _receive(self, kind: str, slots: Sequence[int], per_worker: dict[int, list[int]]) -> list[Any]:
        """The replies to one ``_send`` of ``slots``, in slot order (workers answer in order)."""
        started = time.perf_counter()
        replies: dict[int, Any] = {}
        for worker, held in per_worker.items():
            reply = self.workers.recv(worker)
            items = reply if kind == "reset" else list(zip(*reply, strict=True))
            replies.update(zip(held, items, strict=True))
        self.seconds += time.perf_counter() - started
        return [replies[slot] for slot in slots]

    def close(self) -> None:
        self.workers.close()
