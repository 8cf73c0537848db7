"""Prompts: class-prompt templates per dataset, and diversified per-class scene descriptions from a language
model (the reference asked a chat model for 10 descriptions of at least 15 words per class).

Language-model backends: an OpenAI-compatible chat endpoint (key from the environment; required for OpenAI's
own endpoint, optional for a server at another `api_base`) or a local transformers text-generation model
(seeded per attempt, so retries differ). Answers are validated (count, length) before anything is saved; the JSON
file is rewritten atomically after each class, so a rerun resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from curriculum.registry import Registry
from curriculum.tables import read_prompt_templates, write_json

log = logging.getLogger(__name__)
LANGUAGE_MODELS: Registry = Registry("language-model backend")


def templates(dataset: str) -> list[str]:
    """Return the class-prompt templates of a dataset ('iwildcam', 'imagenet', 'generic'); `{name}` is the class."""
    return read_prompt_templates(dataset)


def class_prompts(names: Sequence[str], dataset: str) -> list[list[str]]:
    """Return, for each class name, its prompts from the dataset's templates."""
    return [[t.format(name=n) for t in templates(dataset)] for n in names]


def request_text(name: str, n: int, min_words: int, hint: str) -> str:
    """Return the instruction sent to the language model for one class."""
    return (
        f"Write {n} different one-sentence descriptions of realistic scenes that contain a {name}"
        f"{' (' + hint + ')' if hint else ''}. Each description must be at least {min_words} words long and "
        f"mention the {name}. Answer with a JSON list of {n} strings and nothing else."
    )


def parse_answer(text: str) -> list[str]:
    """Return the descriptions in a model answer: a JSON list of strings, else one per non-empty line."""
    match = re.search(r"\[.*\]", text, flags=re.S)
    if match:
        try:
            data = json.loads(match.group(0))
            if isinstance(data, list):
                return [str(x).strip() for x in data if str(x).strip()]
        except json.JSONDecodeError:
            pass
    lines = [re.sub(r"^\s*(\d+[.)]|[-*])\s*", "", ln).strip().strip('"') for ln in text.splitlines()]
    return [ln for ln in lines if ln]


def validate(descriptions: list[str], n: int, min_words: int) -> tuple[list[str] | None, str]:
    """Return (the first n valid descriptions, "") or (None, why the answer was rejected)."""
    good = [d for d in descriptions if len(d.split()) >= min_words]
    if len(good) < n:
        short = len(descriptions) - len(good)
        return None, f"{len(good)} of the required {n} descriptions have >= {min_words} words ({short} too short)"
    return good[:n], ""


OPENAI_DEFAULT_BASE = "https://api.openai.com/v1"


class MissingAPIKey(ValueError):
    """The endpoint needs an API key and its environment variable is not set."""


class EndpointRefusedKey(RuntimeError):
    """The endpoint answered 401/403: the key is wrong or missing. Every further request would fail the same
    way, so the run stops at once (the classes finished so far stay saved)."""


class EndpointUnreachable(RuntimeError):
    """The prompt server cannot be reached or did not answer within the timeout (every class would fail alike)."""


@LANGUAGE_MODELS.register("openai")
@dataclass
class OpenAIChat:
    """An OpenAI-compatible chat-completions endpoint; the key comes from the environment variable `api_key_env`.

    OpenAI's own endpoint (the default base URL) needs the key: without it the constructor raises
    MissingAPIKey naming the variable, before any class is asked. A server at another base URL (`api_base`
    or `$OPENAI_BASE_URL`, e.g. a local vLLM or llama.cpp server) may run without a key; the key is sent
    whenever the variable is set.
    """

    model: str = "gpt-4o-mini"
    api_base: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.9
    timeout: float = 60.0

    def __post_init__(self):
        if not os.environ.get(self.api_key_env) and self.base_url() == OPENAI_DEFAULT_BASE:
            raise MissingAPIKey(
                f"the openai backend needs an API key for {OPENAI_DEFAULT_BASE}: set the environment variable "
                f"{self.api_key_env} (or name another with --api_key_env); a local OpenAI-compatible server that "
                "needs no key is used with --api_base URL"
            )

    def base_url(self) -> str:
        """Return the endpoint's base URL: `api_base`, else `$OPENAI_BASE_URL`, else OpenAI's."""
        return (self.api_base or os.environ.get("OPENAI_BASE_URL") or OPENAI_DEFAULT_BASE).rstrip("/")

    def __call__(self, prompt: str) -> str:
        """Return the model's answer to `prompt`."""
        key = os.environ.get(self.api_key_env, "")
        body = json.dumps(
            {"model": self.model, "temperature": self.temperature, "messages": [{"role": "user", "content": prompt}]}
        ).encode()
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
        req = urllib.request.Request(f"{self.base_url()}/chat/completions", data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                data = json.loads(resp.read())
        except urllib.error.HTTPError as err:
            if err.code in (401, 403):
                raise EndpointRefusedKey(
                    f"{self.base_url()} refused the request (HTTP {err.code}): check the key in ${self.api_key_env}"
                    f"{'' if key else ' (not set)'} or --api_key_env"
                ) from err
            raise
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            # no answer at all (refused connection, unknown host, --timeout passed): the next class would wait
            # the same, so the run stops here instead of waiting --timeout x tries x classes
            raise EndpointUnreachable(
                f"{self.base_url()} did not answer within --timeout {self.timeout:g}s "
                f"({getattr(err, 'reason', err)}); check --api_base or the server"
            ) from err
        return data["choices"][0]["message"]["content"]


def _text_generation_pipeline(model: str, device: str | None):
    """Return a transformers text-generation pipeline of a hub id (in the cache) or local folder."""
    from transformers import pipeline

    return pipeline("text-generation", model=model, device=device)


@LANGUAGE_MODELS.register("transformers")
@dataclass
class LocalTextGeneration:
    """A local transformers text-generation model (a hub id in the cache or a folder).

    Sampling is seeded per attempt: the k-th time the same prompt is asked (k = 0, 1, ...) it samples with
    seed `seed + k`, so a retry after a rejected answer gets a different answer, and a fresh run asks the
    same sequence again (deterministic).
    """

    model: str = "Qwen/Qwen2.5-1.5B-Instruct"
    max_new_tokens: int = 600
    device: str | None = None
    seed: int = 0
    _pipe: object = field(default=None, init=False, repr=False)
    _attempts: dict = field(default_factory=dict, init=False, repr=False)

    def load(self):
        """Return the pipeline, loading it on the first call only (one model load per run, not per class)."""
        if self._pipe is None:
            self._pipe = _text_generation_pipeline(self.model, self.device)
        return self._pipe

    def __call__(self, prompt: str) -> str:
        """Return the generated continuation of `prompt` (chat template applied when the tokenizer has one)."""
        from transformers import set_seed

        self.load()
        attempt = self._attempts.get(prompt, 0)
        self._attempts[prompt] = attempt + 1
        set_seed(self.seed + attempt)
        tok = self._pipe.tokenizer
        text = prompt
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        out = self._pipe(text, max_new_tokens=self.max_new_tokens, do_sample=True, return_full_text=False)
        return out[0]["generated_text"]


#: the template backend's scene templates: `{name}` is the class, `{attribute}` one entry of its attribute list
#: (empty without one); each is at least 15 words long, the reference's minimum
SCENE_TEMPLATES = (
    "a real photo of a {attribute} {name} in its natural surroundings, captured in clear daylight with sharp focus",
    "a close-up photograph of a {attribute} {name}, centred in the frame with a softly blurred background behind it",
    "a {attribute} {name} seen from the side on an overcast day, photographed at eye level with natural colours",
    "a wide shot of a {attribute} {name} in a typical everyday setting, lit by warm late afternoon sunlight",
    "a detailed high resolution photo of a {attribute} {name}, showing its texture and shape under even lighting",
    "a candid snapshot of a {attribute} {name} taken indoors, with ambient light and a slightly cluttered background",
    "a photo of a {attribute} {name} in the early morning, with long shadows and a calm, quiet atmosphere around it",
    "a {attribute} {name} photographed from above at a slight angle, filling most of the frame in realistic detail",
    "an outdoor photo of a {attribute} {name} surrounded by its usual environment, taken with a standard camera lens",
    "a realistic picture of a {attribute} {name} in dim evening light, with the main subject still clearly visible",
)


def _stable_index(text: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


@LANGUAGE_MODELS.register("template")
@dataclass
class TemplateDescriptions:
    """Offline and deterministic scene descriptions: class-name templates, optionally with attributes.

    `templates`: a file of templates (a JSON list of strings, or one per line) with `{name}` and optionally
    `{attribute}`; default SCENE_TEMPLATES. `attributes`: a JSON file `{class name: [attribute, ...]}` (the key
    `"*"` applies to classes not listed). Description i of a class uses template (h + i) and attribute (h + i) of
    its list, h a stable hash of the class name, so the same inputs always give the same file.
    """

    templates: str | None = None
    attributes: str | None = None
    model: str | None = None  # accepted for a uniform constructor; a template backend has no model

    def __post_init__(self):
        if self.templates:
            text = Path(self.templates).read_text()
            try:
                items = json.loads(text)
            except json.JSONDecodeError:
                items = [ln.strip() for ln in text.splitlines() if ln.strip()]
            if not isinstance(items, list) or not items or not all(isinstance(t, str) and "{name}" in t for t in items):
                raise ValueError(f"{self.templates}: --templates_file needs a list of templates, each with {{name}}")
            self._templates = list(items)
        else:
            self._templates = list(SCENE_TEMPLATES)
        self._attributes: dict[str, list[str]] = {}
        if self.attributes:
            data = json.loads(Path(self.attributes).read_text())
            if not isinstance(data, dict) or not all(
                isinstance(v, list) and all(isinstance(a, str) for a in v) for v in data.values()
            ):
                raise ValueError(
                    f"{self.attributes}: --attributes needs a JSON object {{class name: [attribute, ...]}}"
                )
            self._attributes = data

    def describe(self, name: str, n: int) -> list[str]:
        """Return `n` descriptions of class `name` (whitespace collapsed; no model involved)."""
        h = _stable_index(name)
        attrs = self._attributes.get(name, self._attributes.get("*", []))
        out = []
        for i in range(n):
            t = self._templates[(h + i) % len(self._templates)]
            attr = attrs[(h + i) % len(attrs)] if attrs else ""
            out.append(" ".join(t.format(name=name, attribute=attr).split()))
        return out

    def __call__(self, prompt: str) -> str:
        """Not a chat model: `generate_prompt_file` calls `describe` instead."""
        raise TypeError("the template backend answers through describe(name, n), not a chat request")


@dataclass
class PromptRun:
    """What generate_prompt_file did: classes `written` now, `skipped_done` (already in the file) and
    `failed` (class name -> why its last answer was rejected; nothing saved for it)."""

    written: int = 0
    skipped_done: int = 0
    failed: dict[str, str] = field(default_factory=dict)


def settings_path(out_json: str | Path) -> Path:
    """Return the file beside a prompt JSON that records the settings its prompts were made with."""
    out_json = Path(out_json)
    return out_json.with_name(out_json.name + ".settings.json")


def generate_prompt_file(
    class_names: Sequence[str],
    out_json: str | Path,
    ask: Callable[[str], str],
    n: int = 10,
    min_words: int = 15,
    hint: str = "",
    max_tries: int = 3,
    progress: bool = True,
    settings: dict | None = None,
    overwrite: bool = False,
) -> PromptRun:
    """Ask `ask` for `n` descriptions per class and save `{class: [prompt, ...]}` to `out_json`; return counts.

    Classes already in the file are skipped (resume). An answer that fails validation is asked again up to
    `max_tries` times, then the class is reported as failed and nothing is saved for it. `settings` (what
    determines the prompts: backend, model, n, min_words, hint) are kept beside the file in
    `{out_json}.settings.json`; resuming a file made with other settings is a ValueError naming them, unless
    `overwrite` (then every class is asked again).
    """
    out_json = Path(out_json)
    data: dict[str, list[str]] = {}
    side = settings_path(out_json)
    if settings is not None and out_json.is_file() and side.is_file() and not overwrite:
        try:
            old = json.loads(side.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{side}: cannot read the recorded settings ({err}); fix it or move it away") from None
        plain = json.loads(json.dumps(settings, default=str))
        changed = sorted(k for k in set(old) | set(plain) if old.get(k) != plain.get(k))
        if changed:
            what = ", ".join(f"--{k} {old.get(k)!r} -> {plain.get(k)!r}" for k in changed)
            raise ValueError(
                f"--prompt_json {out_json} was made with other settings ({what}); use a new --prompt_json, "
                "rerun with the recorded settings, or pass --overwrite to ask every class again"
            )
    if out_json.is_file() and not overwrite:
        try:
            data = json.loads(out_json.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(
                f"--prompt_json {out_json}: the existing file is not valid JSON ({err}); fix it or move it away "
                "(it is resumed, never overwritten)"
            ) from None
        if not isinstance(data, dict) or not all(
            isinstance(v, list) and all(isinstance(p, str) for p in v) for v in data.values()
        ):
            raise ValueError(f"--prompt_json {out_json}: the existing file is not a {{class: [prompt, ...]}} map")
    run = PromptRun()
    if settings is not None:
        write_json(settings, side)
    for name in tqdm(list(dict.fromkeys(class_names)), desc="prompts", unit="class", disable=not progress):
        if name in data:
            run.skipped_done += 1
            continue
        why = ""
        for _ in range(max_tries):
            try:
                if hasattr(ask, "describe"):  # the template backend: no request, no parsing
                    good, why = validate(ask.describe(name, n), n, min_words)
                else:
                    good, why = validate(parse_answer(ask(request_text(name, n, min_words, hint))), n, min_words)
            except (EndpointRefusedKey, EndpointUnreachable):
                raise  # a refused key or a dead server fails every class alike: stop now, keep what is saved
            except Exception as err:  # network or model errors: counted, retried
                good, why = None, f"{type(err).__name__}: {err}"
            if good is not None:
                data[name] = good
                write_json(data, out_json)
                run.written += 1
                break
        else:
            run.failed[name] = why
            log.warning("no valid prompts for %r after %d tries: %s", name, max_tries, why)
    return run
