"""Policies, value baseline, behaviour cloning, NPG/DAPG and samplers (mjrl's algorithms in torch).

Import the submodules directly. Imports go one way, so that state-mode training and checkpoint
loading never need MuJoCo or a GL context:

- ``rollouts`` (numpy): the rollout type, success/return summaries, the Sampler protocol;
- ``rollout_loop``, ``env_backends`` (numpy): the one rollout loop and where its envs live;
  the Adroit env is imported only in the process that makes an env;
- ``policy``, ``checkpoints``, ``bc``, ``npg``, ``trainer`` (torch);
- ``sampler`` (state) and ``vision`` (encoded frames): samplers on the loop.
"""
