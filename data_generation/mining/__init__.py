"""Stage 1 — hard samples: dataset loaders, per-sample difficulty scorers and the rules that mark samples hard.

CLI: `data_generation/mine_hard.py` (and `make_table.py`); library: `datasets` (ImageNet-LT, WILDS iWildCam, image
folders -> sample tables), `difficulty` (the scorer registry and rank helpers), `scorer_runs` (one scorer run over a
table), `prototype_scores` (k-means prototype distance on DINO/timm features), `rules` (HardRule, join, select,
write), `mine` (`run_mining`: one mine_hard.py run).
"""

# importing the scorers registers them, so DIFFICULTY_SCORERS is full whenever this package is imported (as the
# generator and CLIP-scorer backends fill theirs); difficulty.base_score_name relies on it
from data_generation.mining import scorer_runs  # noqa: E402,F401
