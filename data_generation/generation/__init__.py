"""Stage 3 — image-guided generation of the synthetic-to-real spectrum.

CLI: `data_generation/gene_img.py` (and `merge_manifests.py`); library: `plan` (pure: rows x strengths x text
guidance x seeds -> planned variants, sharding), `seeding` (stable per-(sample_id, seed) generators), `generate`
(executes a plan: skip done, batch, atomic writes, shard manifest), `merge` (shard manifests -> manifest.parquet),
`backends/` (diffusers img2img, pixel-space DDPM).
"""
