"""The offline end-to-end demo: `python -m training.demo [--quick]` (both phases on scikit-learn digits).

`run` (the steps, each through a user CLI, and the report), `data` (the long-tailed digits tables).
"""
