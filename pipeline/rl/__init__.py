"""Policies, value baseline, behaviour cloning, NPG/DAPG and samplers (mjrl's algorithms in torch).

Import the submodules directly; `pipeline.rl.sampler` imports MuJoCo, the others only torch.
"""
