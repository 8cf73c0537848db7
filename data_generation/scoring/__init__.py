"""Stage 4 — the CLIPScore filter over a generated spectrum.

CLI: `data_generation/comp_clip_scores.py`; library: `index` (manifest or folder walk ->
one row per synthetic image with its real source), `cache` (embedding cache keyed by file identity), `score`
(embed once, cosine similarities, thresholds, keep), `report` (summaries and plots), `backends/` (open_clip,
transformers CLIP, the offline probe).
"""
