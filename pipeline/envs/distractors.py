"""Seeded visual distractors for the Adroit tasks: scene light, part colors, extra static objects.

Levels (each includes the changes of the levels below it, with larger magnitudes):

- 0: none. The model is not touched: frames are bit-identical to an env built without a spec.
- 1: light. The scene's one spot light moves (up to +-0.67 m in x and y, +-13% in height), is
  re-aimed at a point up to 0.1 m from the table centre, and its diffuse color changes in
  brightness (-23% to +10%) and tint (+-15% per channel); ambient (up to 0.1) and specular (up to
  0.13) light are added. The headlight's diffuse (-20% to +7%) and ambient (+-20%) change too.
- 2: light at twice the level-1 magnitudes, plus colors: every part named in ``COLOR_PARTS``
  gets a color 60% of the way from its own color to a random one.
- 3: light at three times the level-1 magnitudes, fully random part colors (the task objects
  also lose their textures, which would otherwise keep wood brown and foil grey whatever the
  color; the table and floor keep theirs), plus 8 extra boxes, spheres, capsules and cylinders
  of random colors and sizes resting on the table.

The random draws depend on (task, seed) only and the level scales them, so level 3 pushes the
light and the colors further along the same directions as levels 1 and 2 of the same seed.

Physics is unchanged at every level: colors and lights are render-only model fields, and the
extra geoms have contype=conaffinity=0 and zero density and sit on one static body (no joints)
appended after every other body, so no existing body, geom or joint id shifts (gymnasium-robotics
looks everything up by name anyway). The extra geoms stay out of per-task keep-out areas of the
table (the hand's column, the objects' reset ranges), so at reset they hide no pixel of the hand
or the task objects in any RRL camera (tested); they are visual only, so a hand that later sweeps
low over the table edge passes through them.

Not varied: the hand (its color is the same in every RRL frame and demo) and the texture images
themselves (levels 2-3 tint them; level 3 removes them from the task objects).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pipeline.errors import invalid_value, unknown_name

if TYPE_CHECKING:  # mujoco must only be imported through pipeline.envs.adroit (GL backend choice)
    import mujoco

DISTRACTORS_VERSION = 1  # bump whenever a change below alters the frames of some (task, level, seed)
LEVELS = (0, 1, 2, 3)
BODY_NAME = "distractors"  # the static body that carries the extra geoms
GEOM_PREFIX = "distractor_"

_LIGHT_SCALE = {0: 0.0, 1: 1 / 3, 2: 2 / 3, 3: 1.0}
_COLOR_BLEND = {0: 0.0, 1: 0.0, 2: 0.6, 3: 1.0}
_EXTRA_GEOMS = {0: 0, 1: 0, 2: 0, 3: 8}
_DEFAULT_GEOM_RGBA = (0.5, 0.5, 0.5, 1.0)  # MuJoCo shows the material color only for this rgba

# Parts recolored at levels 2-3, one random color per part. "body:X" selects every geom of body
# X, "geom:X" / "site:X" one named element. Alpha is kept (the pen and the targets stay see-through).
_SHARED_PARTS = {"table": ("body:table",), "floor": ("geom:ground",)}
COLOR_PARTS: dict[str, dict[str, tuple[str, ...]]] = {
    "door": {"frame": ("body:frame",), "door": ("body:door",), "handle": ("body:latch",)},
    "hammer": {"hammer_handle": ("geom:handle",), "hammer_neck": ("geom:neck",),
               "hammer_head": ("geom:head",), "board": ("body:nail_board",), "nail": ("body:nail",)},
    "pen": {"pen": ("geom:pen",), "pen_ends": ("geom:top", "geom:bot", "geom:cli"),
            "target": ("geom:target",), "target_ends": ("geom:t_top", "geom:t_bot", "geom:t_cli")},
    "relocate": {"ball": ("geom:sphere",), "target": ("site:target",)},
}

# Table areas (x0, x1, y0, y1 in metres; the table top spans +-0.45 at z=0) where no extra geom
# may stand: the hand's column from the forearm side and the objects' reset and motion ranges.
_HAND_COLUMN = (-0.2, 0.2, -0.45, 0.45)
KEEP_OUT: dict[str, tuple[tuple[float, float, float, float], ...]] = {
    "door": (_HAND_COLUMN, (-0.45, 0.45, 0.1, 0.45)),
    "hammer": (_HAND_COLUMN, (-0.35, 0.2, -0.3, 0.15)),
    "pen": (_HAND_COLUMN, (-0.2, 0.35, -0.45, 0.0)),
    "relocate": (_HAND_COLUMN, (-0.27, 0.27, -0.45, 0.45)),
}
_TABLE_HALF = 0.45
_PLACEMENT_TRIES = 200


@dataclass(frozen=True)
class DistractorSpec:
    """Which distractors to apply: ``level`` 0 (none) to 3, drawn from the stream of ``seed``."""

    level: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.level, bool) or not isinstance(self.level, int) or self.level not in LEVELS:
            raise invalid_value("distractors.level", self.level,
                                "an integer 0 (none), 1 (light), 2 (+ colors) or 3 (+ objects). "
                                "Fix: set the level to 0, 1, 2 or 3")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise invalid_value("distractors.seed", self.seed,
                                "an integer >= 0. Fix: use a non-negative integer seed")

    def key(self) -> dict[str, int]:
        """Everything that decides the frames, for render cache keys."""
        return {"level": self.level, "seed": self.seed, "version": DISTRACTORS_VERSION}


def _rng(task: str, seed: int, purpose: str) -> np.random.Generator:
    # One independent stream per (task, seed, purpose); crc32 is stable across runs, unlike hash().
    return np.random.default_rng([seed, zlib.crc32(task.encode()), zlib.crc32(purpose.encode())])


def _check_task(task: str) -> None:
    if task not in COLOR_PARTS:
        raise unknown_name("distractor task", task, list(COLOR_PARTS))


# --- build time: extra geoms -----------------------------------------------------------------
def _draw_geom(rng: np.random.Generator) -> tuple[str, list[float], float, float, float]:
    """(type, size, footprint radius, height of the centre above the table, yaw) of one object."""
    kind = ("box", "sphere", "capsule", "cylinder")[int(rng.integers(4))]
    yaw = float(rng.uniform(0, np.pi))
    if kind == "box":
        sx, sy, sz = rng.uniform(0.02, 0.06, 3).tolist()
        return kind, [sx, sy, sz], float(np.hypot(sx, sy)), sz, yaw
    if kind == "sphere":
        r = float(rng.uniform(0.02, 0.06))
        return kind, [r, 0.0, 0.0], r, r, yaw
    if kind == "capsule":  # lying on its side
        r, half = float(rng.uniform(0.015, 0.035)), float(rng.uniform(0.03, 0.08))
        return kind, [r, half, 0.0], r + half, r, yaw
    r, half = float(rng.uniform(0.02, 0.05)), float(rng.uniform(0.02, 0.08))  # standing cylinder
    return kind, [r, half, 0.0], r, half, yaw


def _free_spot(rng: np.random.Generator, task: str, radius: float) -> tuple[float, float] | None:
    """A table position whose disc of ``radius`` stays on the table and out of every keep-out area."""
    limit = _TABLE_HALF - radius
    for _ in range(_PLACEMENT_TRIES):
        x, y = rng.uniform(-limit, limit, 2)
        if all(_disc_clear(x, y, radius, area) for area in KEEP_OUT[task]):
            return float(x), float(y)
    return None


def _disc_clear(x: float, y: float, radius: float, area: tuple[float, float, float, float]) -> bool:
    x0, x1, y0, y1 = area
    dx, dy = max(x0 - x, 0.0, x - x1), max(y0 - y, 0.0, y - y1)
    return dx * dx + dy * dy >= radius * radius


def add_distractor_geoms(mj_spec: mujoco.MjSpec, task: str, spec: DistractorSpec) -> int:
    """Add the level's extra objects to ``mj_spec`` (before compiling); returns how many."""
    import mujoco

    _check_task(task)
    count = _EXTRA_GEOMS[spec.level]
    if count == 0:
        return 0
    rng = _rng(task, spec.seed, "geoms")
    # A static child of the world added last: its geoms get the highest ids, shifting none.
    body = mj_spec.worldbody.add_body(name=BODY_NAME)
    added = 0
    for _ in range(count):
        kind, size, radius, height, yaw = _draw_geom(rng)
        rgb = rng.uniform(0.0, 1.0, 3).tolist()
        spot = _free_spot(rng, task, radius)
        if spot is None:
            continue
        # Capsules lie along x then turn by yaw; other shapes only turn about z.
        tilt = [np.cos(np.pi / 4), 0.0, np.sin(np.pi / 4), 0.0] if kind == "capsule" else [1, 0, 0, 0]
        turn = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
        quat = np.zeros(4)
        mujoco.mju_mulQuat(quat, np.asarray(turn, dtype=float), np.asarray(tilt, dtype=float))
        body.add_geom(
            name=f"{GEOM_PREFIX}{added}", type=getattr(mujoco.mjtGeom, f"mjGEOM_{kind.upper()}"),
            size=size, pos=[spot[0], spot[1], height], quat=quat.tolist(), rgba=[*rgb, 1.0],
            contype=0, conaffinity=0, density=0.0,
        )
        added += 1
    return added


# --- after compiling: light and colors ------------------------------------------------------
def perturb_model(model: mujoco.MjModel, task: str, spec: DistractorSpec) -> None:
    """Apply the level's light and color changes to a compiled model, in place."""
    _check_task(task)
    if spec.level == 0:
        return
    _perturb_lights(model, _rng(task, spec.seed, "light"), _LIGHT_SCALE[spec.level])
    blend = _COLOR_BLEND[spec.level]
    if blend > 0:
        # The stream's name seeds it: kept as it was spelt, so scenes (and keys) stay the same.
        _recolor(model, task, _rng(task, spec.seed, "colours"), blend)


def _perturb_lights(model: mujoco.MjModel, rng: np.random.Generator, scale: float) -> None:
    for i in range(model.nlight):
        shift = rng.uniform(-2.0, 2.0, 2)
        lift = rng.uniform(-0.4, 0.4)
        aim = np.array([*rng.uniform(-0.3, 0.3, 2), 0.0])
        # Mostly dimmer: the white table is already saturated, so brighter light hardly shows.
        brightness = rng.uniform(-0.7, 0.3)
        tint = rng.uniform(-0.45, 0.45, 3)
        ambient, specular = rng.uniform(0.0, 0.3, 3), rng.uniform(0.0, 0.4)
        pos = model.light_pos[i].copy()
        pos[:2] += scale * shift
        pos[2] *= 1.0 + scale * lift
        direction = scale * aim - pos
        model.light_pos[i] = pos
        model.light_dir[i] = direction / np.linalg.norm(direction)
        diffuse = model.light_diffuse[i] * (1.0 + scale * brightness) * (1.0 + scale * tint)
        model.light_diffuse[i] = np.clip(diffuse, 0.0, 1.0)
        model.light_ambient[i] = np.clip(model.light_ambient[i] + scale * ambient, 0.0, 1.0)
        model.light_specular[i] = np.clip(model.light_specular[i] + scale * specular, 0.0, 1.0)
    # The headlight (on the camera) lights every view too; without it dimming would hardly show.
    headlight = model.vis.headlight
    headlight.diffuse = np.clip(headlight.diffuse * (1.0 + scale * rng.uniform(-0.6, 0.2)), 0, 1)
    headlight.ambient = np.clip(headlight.ambient * (1.0 + scale * rng.uniform(-0.6, 0.6)), 0, 1)


def _recolor(model: mujoco.MjModel, task: str, rng: np.random.Generator, blend: float) -> None:
    parts = {**_SHARED_PARTS, **COLOR_PARTS[task]}
    for part in sorted(parts):  # sorted: the draw order must not depend on dict edits
        target = rng.uniform(0.1, 1.0, 3)
        for kind, index in _select(model, parts[part]):
            rgba = model.geom_rgba if kind == "geom" else model.site_rgba
            own = _shown_rgba(model, kind, index)
            rgba[index, :3] = (1.0 - blend) * own[:3] + blend * target
            rgba[index, 3] = own[3]
            if blend == 1.0 and kind == "geom" and part not in _SHARED_PARTS:
                # Textures multiply the color and would keep wood brown and foil grey.
                model.geom_matid[index] = -1


def _select(model: mujoco.MjModel, selectors: tuple[str, ...]) -> list[tuple[str, int]]:
    """("geom" | "site", id) of every element the ``kind:name`` selectors name."""
    import mujoco

    chosen: list[tuple[str, int]] = []
    for selector in selectors:
        kind, name = selector.split(":")
        obj = getattr(mujoco.mjtObj, f"mjOBJ_{kind.upper()}")
        index = mujoco.mj_name2id(model, obj, name)
        if index < 0:  # the upstream model no longer has a part that COLOR_PARTS names
            count = {"body": model.nbody, "geom": model.ngeom, "site": model.nsite}[kind]
            names = [mujoco.mj_id2name(model, obj, i) or "" for i in range(count)]
            raise unknown_name(f"{kind} in the model", name, [n for n in names if n])
        if kind == "body":
            chosen += [("geom", g) for g in range(model.ngeom) if model.geom_bodyid[g] == index]
        else:
            chosen.append((kind, index))
    return chosen


def _shown_rgba(model: mujoco.MjModel, kind: str, index: int) -> np.ndarray:
    """The color MuJoCo draws: the material's, unless the element's own rgba is not the default."""
    own = (model.geom_rgba if kind == "geom" else model.site_rgba)[index].copy()
    mat = (model.geom_matid if kind == "geom" else model.site_matid)[index]
    if mat >= 0 and np.allclose(own, _DEFAULT_GEOM_RGBA):
        return np.array(model.mat_rgba[mat], dtype=float)
    return np.asarray(own, dtype=float)
