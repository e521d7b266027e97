"""What the learning stages train on: demo (observation, action) arrays per observation mode, and
the samplers that produce rollouts in the same observation space.

- ``state``: the demos' recorded low-dimensional observations (as the env itself produces them).
- vision modes: the cached features of every camera (feature store rows, episode order), then
  proprioception from the episode file (with seeded noise for ``noisy_proprio``).

Nothing here imports MuJoCo; ``make_sampler`` imports the samplers when it is called.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from pipeline.config import PolicyConfig
from pipeline.devices import resolve_device
from pipeline.encoders.layers import select_features
from pipeline.envs.demos import load_demos
from pipeline.errors import ConfigError
from pipeline.outputs import DataSource
from pipeline.rl.env_backends import task_env
from pipeline.rl.rollouts import Array, Sampler
from pipeline.rl.vision import ObsSpec, VisionSampler, check_encoder_matches_store, vision_layout


def demo_arrays(src: DataSource, policy: PolicyConfig) -> tuple[Array, Array]:
    """(observations, actions) of every demo step, in episode order."""
    if src.obs_mode == "state":
        assert src.demos_file is not None
        demos, _ = load_demos(src.demos_file, src.task, src.demos_sha256)
        return (np.concatenate([d.observations for d in demos]).astype(np.float32),
                np.concatenate([d.actions for d in demos]))
    from pipeline.store.features import open_features

    assert src.store and src.feature_key
    store = open_features(src.store, src.feature_key)  # self-sufficient: no frames needed
    proprio, actions = store.low_dim("proprio"), store.low_dim("actions")
    spec = ObsSpec(src.obs_mode, src.cameras, policy.proprio_noise)
    names = select_features(list(store.features), src.features, store.location)
    features = {c: store.read_features(c, names) for c in src.cameras}
    obs = spec.assemble(features, proprio, np.random.default_rng([policy.seed, 2]))
    return obs, actions.astype(np.float64)


def make_sampler(src: DataSource, policy: PolicyConfig, reward: str, envs: int,
                 device: str = "auto", workers: int | None = None, record: bool = False,
                 env_factory: Callable[..., Any] | None = None) -> Sampler:
    """A sampler of ``envs`` parallel envs whose observations match the training data of ``src``.

    ``env_factory`` (vision modes) replaces ``task_env`` for the envs that render the frames.
    Vision modes encode on ``device`` (encode.device), pipelined (``pipeline.rl.rollout_loop``), with
    render workers and encode threads matched to the cores (``vision_layout``) unless
    ``workers`` is given; state mode uses 2 workers unless told.
    """
    if src.obs_mode == "state":
        from pipeline.rl.sampler import ProcessSampler

        workers = workers or 2
        return ProcessSampler(src.task, workers=workers, n_envs=max(1, envs // workers),
                              reward=reward)
    from pipeline.encoders import create_encoder
    from pipeline.store.features import open_features

    assert src.store and src.feature_key
    try:  # before anything starts: a missing GPU named by its setting
        resolve_device(device)
    except ConfigError as exc:
        raise ConfigError(f"encode.device: {exc}") from None
    store = open_features(src.store, src.feature_key)
    attrs, pre = store.attrs, store.attrs["preprocessing"]
    encoder = create_encoder(attrs["encoder"], weights_argument(src.store, attrs["weights"]),
                             attrs["precision"], pre["resize"], pre["crop"], device=device,
                             interpolation=pre.get("interpolation", "bilinear"),
                             layers=tuple(attrs.get("layers", ())), pool=attrs.get("pool", "auto"),
                             weights_prefix=attrs.get("weights_prefix"))
    check_encoder_matches_store(encoder, attrs, f"{src.store}/{src.feature_key}")
    encoder = encoder.select(select_features(list(store.features), src.features, store.location))
    cores = len(os.sched_getaffinity(0))
    layout = vision_layout(cores, encoder.device.type == "cuda")
    if workers:
        layout = dataclasses.replace(layout, workers=workers)
    return VisionSampler(src.task, encoder, ObsSpec(src.obs_mode, src.cameras, policy.proprio_noise),
                         n_envs=envs, reward=reward, width=int(src.render["width"]),
                         height=int(src.render["height"]), shadows=bool(src.render["shadows"]),
                         record=record,
                         env_factory=env_factory or task_env, **layout.kwargs())


def weights_argument(store: str, weights: dict[str, Any]) -> str:
    """The `weights=` argument that rebuilds a group's encoder: its weights file, found by
    sha256 in the store's weights folder or the local weights cache (never by a stored path)."""
    from pipeline.store.weights_files import WeightsFile, fetch_weights

    ref = WeightsFile.from_attrs(weights)
    if ref is None:
        return str(weights.get("kind", "pretrained"))
    return str(fetch_weights(store, ref, legacy_path=weights.get("path")))
