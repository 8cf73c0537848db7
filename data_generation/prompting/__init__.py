"""Stage 2 — class prompts: the templates per dataset and diversified descriptions from a language model.

CLI: `data_generation/get_text_prompt.py`; library: `text_prompts` (templates, OpenAI-compatible and local
transformers backends, validation and retries, the prompt JSON file).
"""
