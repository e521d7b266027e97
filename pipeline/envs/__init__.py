"""Adroit environments: task facts, cameras, offscreen rendering, state restore, demo replay.

Import ``pipeline.envs.adroit`` (which pulls in mujoco) only where simulation or rendering is
needed; ``pipeline.envs.tasks`` is import-light and safe everywhere.
"""
