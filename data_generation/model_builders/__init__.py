"""Random-weight model builders for tests, benchmarks and the quickstart (never used by a real run).

`tiny` (tiny diffusers img2img pipelines and the CLIP tokenizer files), `tiny_clip` (tiny open_clip / transformers
CLIP folders), `refiner` (the real SDXL-refiner architecture with random weights, for throughput runs).
"""
