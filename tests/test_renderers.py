"""Renderer round trips: prefix property, end-of-turn/EOS, exact reply coverage, no doubled BOS."""

from __future__ import annotations

import logging
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from conftest import SHARED
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import AutoTokenizer, PreTrainedTokenizerFast  # noqa: E402

from hf_dpo.tokens.renderers import (  # noqa: E402
    Renderer,
    available_renderers,
    get_renderer,
    register_renderer,
)

SMOLLM = SHARED / "models" / "smollm2-135m-instruct"
needs_smollm = pytest.mark.skipif(not SMOLLM.is_dir(), reason=f"shared test material not found at {SMOLLM}")

TINY_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
TINY_SPECIALS = ["<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>"]

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi there, who are you?"},
    {"role": "assistant", "content": "A helpful assistant.\nAsk away!"},
    {"role": "user", "content": "What is 37 + 48?"},
]
REPLY = {"role": "assistant", "content": "37 + 48 = 85."}


def tiny_tokenizer(adds_bos: bool, chat_template: str | None = TINY_TEMPLATE) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on a few lines (real merges, so boundary effects show up)."""
    corpus = [
        "User: What is 37 + 48?\n\nAssistant: 37 + 48 = 85.",
        "Hi there, who are you? A helpful assistant. Ask away! You are terse.",
        "The quick brown fox jumps over the lazy dog.",
    ] * 4
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=TINY_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    if adds_bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        additional_special_tokens=TINY_SPECIALS[2:],
        chat_template=chat_template,
    )


@pytest.fixture(scope="module")
def smollm():
    if not SMOLLM.is_dir():
        pytest.skip(f"shared test material not found at {SMOLLM}")
    return AutoTokenizer.from_pretrained(str(SMOLLM))


def expected_texts(name: str, messages: list[dict], reply: str, tokenizer) -> tuple[str, str]:
    """(full conversation, completion) text as each format defines them, written independently of the
    renderers (chat_template: straight from ``apply_chat_template``)."""
    if name == "chat_template":
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(
            [*messages, {"role": "assistant", "content": reply}], tokenize=False
        )
        full = full.rstrip()  # the newline after the final end-of-turn token is not generated
        assert full.startswith(prompt)
        return full, full[len(prompt) :]
    if name == "role_colon":
        names = {"system": "System", "user": "User", "assistant": "Assistant"}
        turns = "\n\n".join(f"{names[m['role']]}: {m['content']}" for m in messages)
        return f"{turns}\n\nAssistant: {reply}", f" {reply}"
    if name == "chatml":
        turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return f"{turns}<|im_start|>assistant\n{reply}<|im_end|>", f"{reply}<|im_end|>"
    assert name == "llama3"
    turns = "".join(
        f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content'].strip()}<|eot_id|>"
        for m in messages
    )
    completion = f"{reply.strip()}<|eot_id|>"
    return (
        f"<|begin_of_text|>{turns}<|start_header_id|>assistant<|end_header_id|>\n\n{completion}",
        completion,
    )


def check_round_trip(tokenizer, name: str, messages: list[dict], reply: dict) -> None:
    renderer = get_renderer(name, tokenizer)
    prompt_ids = renderer.encode_prompt(messages)
    completion_ids = renderer.encode_completion(messages, reply)
    full, completion = expected_texts(name, messages, reply["content"], tokenizer)

    # ends with the end-of-turn token, or EOS where the format's turn end is not a special token
    end = [s for s in tokenizer.all_special_tokens if completion.endswith(s)]
    eos_appended = not end
    assert completion_ids[-1] == (
        tokenizer.eos_token_id if eos_appended else tokenizer.convert_tokens_to_ids(end[0])
    )
    eos_text = tokenizer.eos_token if eos_appended else ""
    # the completion covers exactly the reply (plus end marker)
    assert tokenizer.decode(completion_ids) == completion + eos_text
    # BOS exactly once when the tokenizer uses one, never invented, never doubled
    bos, adds_bos = tokenizer.bos_token_id, tokenizer("x")["input_ids"][0] == tokenizer.bos_token_id
    bos_ids = [bos] if adds_bos and not full.startswith(tokenizer.bos_token) else []
    assert prompt_ids[:2] != [bos, bos]
    assert (prompt_ids[0] == bos) == (adds_bos or full.startswith(tokenizer.bos_token))
    assert (
        bos not in completion_ids
        or name == "chatml"
        and bos == tokenizer.convert_tokens_to_ids("<|im_start|>")
    )
    # prefix property: prompt + completion == the full conversation (text always; ids unless a BPE merge
    # spans the boundary, which happens for llama3 text on a tokenizer without the llama3 special tokens)
    assert tokenizer.decode(prompt_ids + completion_ids) == tokenizer.decode(bos_ids) + full + eos_text
    whole = (
        bos_ids
        + tokenizer(full, add_special_tokens=False)["input_ids"]
        + ([tokenizer.eos_token_id] * eos_appended)
    )
    if not (name == "llama3" and "<|eot_id|>" not in tokenizer.all_special_tokens):
        assert prompt_ids + completion_ids == whole


@pytest.mark.parametrize("name", ["chat_template", "role_colon", "chatml", "llama3"])
@pytest.mark.parametrize("adds_bos", [False, True])
def test_round_trip_tiny_tokenizer(name: str, adds_bos: bool) -> None:
    tokenizer = tiny_tokenizer(adds_bos)
    check_round_trip(tokenizer, name, CONVERSATION, REPLY)
    check_round_trip(tokenizer, name, CONVERSATION[1:2], {"role": "assistant", "content": "Hi!"})


@needs_smollm
@pytest.mark.parametrize("name", ["chat_template", "role_colon", "chatml", "llama3"])
def test_round_trip_smollm(smollm, name: str) -> None:
    check_round_trip(smollm, name, CONVERSATION, REPLY)
    check_round_trip(smollm, name, CONVERSATION[1:2], {"role": "assistant", "content": "Hi!\n\nBye."})


@needs_smollm
def test_leading_whitespace_reply_merges_and_warns_once(smollm, caplog) -> None:
    """SmolLM's BPE joins the generation prompt's "\n" with the reply's leading spaces, so no split of the
    full conversation's ids is right: the prompt stays the inference prompt, the reply is tokenised alone."""
    renderer = get_renderer("chat_template", smollm)
    messages, reply = CONVERSATION[1:2], {"role": "assistant", "content": "  padded reply"}
    with caplog.at_level(logging.WARNING, logger="hf_dpo"):
        prompt_ids = renderer.encode_prompt(messages)
        completion_ids = [renderer.encode_completion(messages, reply) for _ in range(2)][0]
    assert prompt_ids == smollm.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]
    assert completion_ids == smollm("  padded reply<|im_end|>", add_special_tokens=False)["input_ids"]
    full = smollm.apply_chat_template([*messages, reply])["input_ids"]
    assert full[: len(prompt_ids) + len(completion_ids)] != prompt_ids + completion_ids
    assert sum("boundary" in r.getMessage() for r in caplog.records) == 1


@needs_smollm
def test_smollm_chat_template_matches_apply_chat_template(smollm) -> None:
    """Against transformers' own tokenisation: prompt == generation-prompt ids, prompt+completion is a
    prefix of the full conversation and the rest is the template's trailing newline."""
    renderer = get_renderer(None, smollm)
    assert renderer.name == "chat_template"
    prompt_ids = renderer.encode_prompt(CONVERSATION)
    completion_ids = renderer.encode_completion(CONVERSATION, REPLY)
    assert prompt_ids == smollm.apply_chat_template(CONVERSATION, add_generation_prompt=True)["input_ids"]
    full = smollm.apply_chat_template([*CONVERSATION, REPLY])["input_ids"]
    n = len(prompt_ids) + len(completion_ids)
    assert full[:n] == prompt_ids + completion_ids
    assert smollm.decode(full[n:]) == "\n"
    assert completion_ids[-1] == smollm.convert_tokens_to_ids("<|im_end|>") == smollm.eos_token_id


@needs_smollm
def test_llama3_on_foreign_tokenizer_warns_once(smollm, caplog) -> None:
    """SmolLM's BPE splits the prompt's trailing "\\n\\n" differently inside the full text."""
    renderer = get_renderer("llama3", smollm)
    with caplog.at_level(logging.WARNING, logger="hf_dpo"):
        for _ in range(3):
            renderer.encode_completion(CONVERSATION, REPLY)
    assert sum("boundary" in r.getMessage() for r in caplog.records) == 1


def test_default_renderer_choice() -> None:
    assert get_renderer(None, tiny_tokenizer(False)).name == "chat_template"
    assert get_renderer(None, tiny_tokenizer(False, chat_template=None)).name == "role_colon"


def test_chat_template_renderer_needs_template() -> None:
    with pytest.raises(ValueError, match="needs a tokenizer with a chat template.*role_colon"):
        get_renderer("chat_template", tiny_tokenizer(False, chat_template=None))


def test_unknown_renderer_suggests_closest() -> None:
    with pytest.raises(
        ValueError, match=r"Did you mean 'chatml'\?.*chat_template, chatml, llama3, role_colon"
    ):
        get_renderer("chat_ml", tiny_tokenizer(False))


def test_register_custom_renderer() -> None:
    @register_renderer("test_human")
    class HumanRenderer(Renderer):
        def prompt_text(self, messages):
            return "".join(f"{m['role']}> {m['content']}\n" for m in messages) + "assistant>"

        def completion_text(self, messages, reply):
            return " " + reply["content"]

    tokenizer = tiny_tokenizer(False)
    assert "test_human" in available_renderers()
    renderer = get_renderer("test_human", tokenizer)
    messages = [{"role": "user", "content": "Hi"}]
    ids = renderer.encode_completion(messages, {"role": "assistant", "content": "Hello"})
    assert tokenizer.decode(ids) == " Hello</s>"
    with pytest.raises(TypeError):
        register_renderer("bad")(object)  # type: ignore[arg-type]


def test_rerendering_template_keeps_inference_prompt_and_warns_once(caplog) -> None:
    """A template whose generation prompt differs from how it prints a finished assistant turn."""
    template = (
        "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}</s>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\nThinking done.\n{% endif %}"
    )
    tokenizer = tiny_tokenizer(False, chat_template=template)
    renderer = get_renderer("chat_template", tokenizer)
    messages = CONVERSATION[1:2]
    with caplog.at_level(logging.WARNING, logger="hf_dpo"):
        prompt = tokenizer.decode(renderer.encode_prompt(messages))
        completions = [tokenizer.decode(renderer.encode_completion(messages, REPLY)) for _ in range(2)]
    assert prompt.endswith("<|assistant|>\nThinking done.\n")
    assert completions == ["37 + 48 = 85.</s>"] * 2
    assert sum("re-renders" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize(
    ("messages", "reply", "match"),
    [
        ("What is 2 + 2?", REPLY, "prompt must be a list"),
        ([], REPLY, "empty message list"),
        ([{"role": "user"}], REPLY, r"prompt\[0\] is missing 'content'"),
        ([{"content": "hi"}], REPLY, r"prompt\[0\] is missing 'role'"),
        ([{"role": "human", "content": "hi"}], REPLY, r"prompt\[0\]\['role'\] must be one of"),
        ([{"role": "user", "content": ["hi"]}], REPLY, r"prompt\[0\]\['content'\] must be a string"),
        (["hi"], REPLY, r"prompt\[0\] must be a dict"),
        ([{"role": "user", "content": "hi"}], {"role": "user", "content": "x"}, "must be 'assistant'"),
        ([{"role": "user", "content": "hi"}], "x", "reply must be a dict"),
    ],
)
@pytest.mark.parametrize("name", ["chat_template", "role_colon"])
def test_malformed_messages_raise_value_error(messages, reply, match: str, name: str) -> None:
    renderer = get_renderer(name, tiny_tokenizer(False))
    with pytest.raises(ValueError, match=match):
        renderer.encode_completion(messages, reply)
    if reply is REPLY:
        with pytest.raises(ValueError, match=match):
            renderer.encode_prompt(messages)


def test_template_errors_become_value_errors() -> None:
    template = (
        "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system') }}{% endif %}"
        "{{ m.content }}{% endfor %}"
    )
    renderer = get_renderer("chat_template", tiny_tokenizer(False, chat_template=template))
    with pytest.raises(ValueError, match="chat template rejected the conversation: no system"):
        renderer.encode_prompt(CONVERSATION)


def test_datasets_fingerprint_ignores_renderer_caches() -> None:
    """The tokenization map hashes the renderer; its caches must not change the cache fingerprint."""
    from datasets.fingerprint import Hasher

    renderer = get_renderer("chatml", tiny_tokenizer(False))
    before = Hasher.hash(renderer)
    renderer.encode_completion(CONVERSATION, REPLY)
    assert Hasher.hash(renderer) == before
