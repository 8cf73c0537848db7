"""Prompt templates and diversified prompts from an OpenAI-compatible endpoint / a local transformers model."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pandas as pd
import pytest

from data_generation import get_text_prompt
from data_generation.prompting.text_prompts import class_prompts, parse_answer, templates, validate

GOOD = [
    f"A {{name}} walks slowly across the dry savanna grass at dawn while birds circle overhead number {i}."
    for i in range(10)
]


class FakeChat(BaseHTTPRequestHandler):
    """An OpenAI-compatible /chat/completions endpoint on loopback: good answers, except for 'zebra'."""

    calls: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][0]["content"]
        FakeChat.calls.append((prompt, self.headers.get("Authorization")))
        name = "zebra" if "zebra" in prompt else "cheetah"
        answer = (
            json.dumps(["too short"] * 10)
            if name == "zebra"
            else "Sure!\n" + json.dumps([g.format(name=name) for g in GOOD])
        )
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": answer}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def chat_server():
    server = HTTPServer(("127.0.0.1", 0), FakeChat)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeChat.calls = []
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_templates_per_dataset():
    assert templates("iwildcam") == ["a photo of {name}.", "{name} in the wild."]
    assert class_prompts(["cheetah"], "iwildcam") == [["a photo of cheetah.", "cheetah in the wild."]]
    assert len(templates("imagenet")) == 7
    with pytest.raises(KeyError, match="no prompt templates for dataset 'coco'"):
        templates("coco")


def test_parse_and_validate():
    assert parse_answer('Here: ["a b", "c d"] done') == ["a b", "c d"]
    assert parse_answer("1. first one\n2) second one\n- third") == ["first one", "second one", "third"]
    good, why = validate(["w " * 15, "w " * 3, "w " * 20], n=2, min_words=15)
    assert good is not None and len(good) == 2 and why == ""
    bad, why = validate(["w " * 15, "w " * 3], n=2, min_words=15)
    assert bad is None and "1 of the required 2" in why


def test_openai_endpoint_validates_and_resumes(tmp_path, chat_server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    table = tmp_path / "hard.csv"
    pd.DataFrame(
        {
            "sample_id": ["a", "b", "c"],
            "filepath": ["a.jpg", "b.jpg", "c.jpg"],
            "label": [0, 0, 1],
            "label_name": ["cheetah", "cheetah", "zebra"],
        }
    ).to_csv(table, index=False)
    out = tmp_path / "prompts.json"
    argv = ["--data_csv", str(table), "--prompt_json", str(out), "--api_base", chat_server, "--max_tries", "2"]
    assert get_text_prompt.main(argv) == 1  # zebra's answers are too short: reported, not saved
    saved = json.loads(out.read_text())
    assert list(saved) == ["cheetah"] and len(saved["cheetah"]) == 10
    assert all(len(p.split()) >= 15 and "cheetah" in p for p in saved["cheetah"])
    assert len(FakeChat.calls) == 1 + 2 and FakeChat.calls[0][1] == "Bearer sk-test"
    assert "10 different" in FakeChat.calls[0][0] and "at least 15 words" in FakeChat.calls[0][0]
    FakeChat.calls = []
    assert get_text_prompt.main(argv) == 1
    assert all("zebra" in c[0] for c in FakeChat.calls)  # cheetah was not asked again


def test_openai_without_a_key_fails_at_once_naming_the_variable(tmp_path, monkeypatch, capsys):
    """OpenAI's endpoint and no key: exit 2 before any class is asked, naming the environment variable."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("MY_LLM_KEY", raising=False)
    table = tmp_path / "hard.csv"
    pd.DataFrame(
        {"sample_id": ["a", "b"], "filepath": ["a.jpg", "b.jpg"], "label": [0, 1], "label_name": ["cheetah", "zebra"]}
    ).to_csv(table, index=False)
    out = tmp_path / "prompts.json"
    assert get_text_prompt.main(["--data_csv", str(table), "--prompt_json", str(out)]) == 2
    err = capsys.readouterr().err
    assert "OPENAI_API_KEY" in err and "api.openai.com" in err and not out.exists()
    assert (
        get_text_prompt.main(["--data_csv", str(table), "--prompt_json", str(out), "--api_key_env", "MY_LLM_KEY"]) == 2
    )
    assert "MY_LLM_KEY" in capsys.readouterr().err


def test_local_server_needs_no_key_and_a_named_key_variable_is_sent(tmp_path, chat_server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    table = tmp_path / "hard.csv"
    pd.DataFrame({"sample_id": ["a"], "filepath": ["a.jpg"], "label": [0], "label_name": ["cheetah"]}).to_csv(
        table, index=False
    )
    out = tmp_path / "prompts.json"
    assert get_text_prompt.main(["--data_csv", str(table), "--prompt_json", str(out), "--api_base", chat_server]) == 0
    assert len(json.loads(out.read_text())["cheetah"]) == 10
    assert FakeChat.calls[0][1] is None  # no key: no Authorization header at all
    FakeChat.calls = []
    monkeypatch.setenv("MY_LLM_KEY", "sk-local")
    out.unlink()
    assert (
        get_text_prompt.main(
            [
                "--data_csv",
                str(table),
                "--prompt_json",
                str(out),
                "--api_base",
                chat_server,
                "--api_key_env",
                "MY_LLM_KEY",
            ]
        )
        == 0
    )
    assert FakeChat.calls[0][1] == "Bearer sk-local"


class RefusingChat(BaseHTTPRequestHandler):
    """An endpoint that refuses every key (HTTP 401) and counts the requests."""

    calls = 0

    def do_POST(self):  # noqa: N802
        RefusingChat.calls += 1
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_refused_key_stops_at_the_first_request(tmp_path, monkeypatch, capsys):
    server = HTTPServer(("127.0.0.1", 0), RefusingChat)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    RefusingChat.calls = 0
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    table = tmp_path / "hard.csv"
    pd.DataFrame(
        {
            "sample_id": ["a", "b", "c"],
            "filepath": ["a.jpg", "b.jpg", "c.jpg"],
            "label": [0, 1, 2],
            "label_name": ["cheetah", "zebra", "lion"],
        }
    ).to_csv(table, index=False)
    try:
        code = get_text_prompt.main(
            [
                "--data_csv",
                str(table),
                "--prompt_json",
                str(tmp_path / "p.json"),
                "--api_base",
                f"http://127.0.0.1:{server.server_address[1]}/v1",
            ]
        )
    finally:
        server.shutdown()
    assert code == 2 and RefusingChat.calls == 1  # not 3 classes x 3 tries
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "OPENAI_API_KEY" in err


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory):
    """A tiny random GPT-2 (with the CLIP BPE tokenizer, which ships offline) saved to a folder."""
    from transformers import CLIPTokenizer, GPT2Config, GPT2LMHeadModel

    from data_generation.model_builders.tiny import write_clip_tokenizer

    root = tmp_path_factory.mktemp("lm")
    folder = root / "tiny-gpt2"
    GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=49408, n_positions=256)).save_pretrained(
        folder
    )
    # any BPE tokenizer works for the plumbing; the CLIP one ships offline
    CLIPTokenizer.from_pretrained(str(write_clip_tokenizer(root / "tok"))).save_pretrained(folder)
    return folder


def test_local_transformers_model_goes_through_validation(tmp_path, tiny_lm_dir):
    """A tiny random GPT-2 saved to a folder loads through the real pipeline; its babble is rejected."""
    from data_generation.prompting.text_prompts import LocalTextGeneration, generate_prompt_file

    lm = LocalTextGeneration(model=str(tiny_lm_dir), max_new_tokens=8)
    assert isinstance(lm("a photo of"), str)
    run = generate_prompt_file(["cheetah"], tmp_path / "p.json", lm, n=2, min_words=15, max_tries=1, progress=False)
    assert run.written == 0 and "cheetah" in run.failed and not (tmp_path / "p.json").exists()


def test_local_model_retries_sample_with_a_new_seed(tmp_path, tiny_lm_dir):
    """Each retry of a rejected answer samples with seed + attempt: retries differ, and a fresh run repeats them."""
    from data_generation.prompting.text_prompts import LocalTextGeneration, generate_prompt_file

    def recorded(lm, answers):
        def ask(prompt):
            answers.append(lm(prompt))
            return answers[-1]

        return ask

    first, again = [], []
    for answers in (first, again):
        lm = LocalTextGeneration(model=str(tiny_lm_dir), max_new_tokens=12, seed=5)
        run = generate_prompt_file(
            ["cheetah"], tmp_path / "p.json", recorded(lm, answers), n=2, min_words=15, max_tries=3, progress=False
        )
        assert run.failed and len(answers) == 3
    assert len(set(first)) == 3  # three attempts, three different answers
    assert first == again  # deterministic: attempt k always samples with seed 5 + k
