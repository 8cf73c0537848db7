"""Reproduce a paper setup with one command: `python -m training.reproduce --setup imagenet_lt|iwildcam ...`.

`run` (the steps, each through a user CLI with the setup's preset, the dry-run plan and the results table).
"""
