"""TRL drop-in surface of DPOTrainer: TRL's constructor order, trainer attributes, compute_metrics, datasets
tokenized on every path (evaluate/predict, streaming), tool-calling rows, clear errors for TRL-only input."""

import inspect
import logging

import pytest
import torch
from conftest import make_tiny_llama
from datasets import Dataset, IterableDataset
from transformers import EvalPrediction

from hf_dpo import DPOConfig, DPOTrainer
from hf_dpo.config import dpo_config_from
from hf_dpo.modeling.loading import load_causal_lm
from hf_dpo.tokens.renderers import get_renderer
from hf_dpo.tokens.tokenization import tokenize_dataset, tokenize_row

ROWS = [
    {"prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": str(a + b + 1)}
    for a in range(4)
    for b in range(4)
]


def config(tmp_path, **overrides) -> DPOConfig:
    base = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        max_steps=2,
        report_to=[],
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        max_length=32,
    )
    return DPOConfig(**{**base, **overrides})


def test_constructor_follows_trl_positional_order():
    trl = pytest.importorskip("trl")
    theirs = list(inspect.signature(trl.DPOTrainer.__init__).parameters)
    ours = list(inspect.signature(DPOTrainer.__init__).parameters)
    assert ours[: len(theirs)] == theirs
    assert {"optimizer_cls_and_kwargs", "preprocess_logits_for_metrics"} <= set(ours)


def test_raw_eval_and_predict_datasets_are_tokenized(tmp_path, char_tokenizer):
    trainer = DPOTrainer(
        make_tiny_llama(len(char_tokenizer)),
        None,
        config(tmp_path),
        None,
        Dataset.from_list(ROWS),
        processing_class=char_tokenizer,
    )
    raw = Dataset.from_list(ROWS[:6])
    tokenized = trainer._tokenize(raw, char_tokenizer, trainer.args, "eval")
    by_raw = trainer.evaluate(eval_dataset=raw)
    assert by_raw["eval_loss"] == pytest.approx(
        trainer.evaluate(eval_dataset=tokenized)["eval_loss"], abs=1e-6
    )
    assert by_raw["eval_num_pairs"] == 6
    assert trainer.predict(raw).metrics["test_loss"] == pytest.approx(by_raw["eval_loss"], abs=1e-6)
    assert trainer.evaluate(eval_dataset={"a": raw})["eval_a_loss"] == pytest.approx(
        by_raw["eval_loss"], abs=1e-6
    )


def test_streaming_datasets_train_and_evaluate_like_map_style(tmp_path, char_tokenizer):
    stream = IterableDataset.from_generator(lambda: iter(ROWS))
    trainer = DPOTrainer(
        make_tiny_llama(len(char_tokenizer)),
        args=config(tmp_path),
        train_dataset=stream,
        eval_dataset=Dataset.from_list(ROWS).to_iterable_dataset(),
        processing_class=char_tokenizer,
    )
    first = next(iter(trainer.train_dataset))
    expected = tokenize_row(ROWS[0], 0, char_tokenizer, None, 32, None)
    assert {k: first[k] for k in expected} == expected
    assert trainer.evaluate()["eval_num_pairs"] == len(ROWS)
    trainer.train()
    assert trainer.state.global_step == 2
    with pytest.raises(ValueError, match="precompute_ref_log_probs.*not supported with IterableDataset"):
        DPOTrainer(
            make_tiny_llama(len(char_tokenizer)),
            args=config(tmp_path, precompute_ref_log_probs=True),
            train_dataset=stream,
            processing_class=char_tokenizer,
        )


def test_compute_metrics_gets_trl_logits_and_input_ids(tmp_path, char_tokenizer):
    seen = []

    def compute_metrics(pred: EvalPrediction) -> dict:
        seen.append(pred)
        return {"rows": float(pred.predictions.shape[0])}

    model = make_tiny_llama(len(char_tokenizer))
    trainer = DPOTrainer(
        model,
        args=config(tmp_path, per_device_eval_batch_size=16),
        train_dataset=ROWS and Dataset.from_list(ROWS),
        eval_dataset=Dataset.from_list(ROWS),
        processing_class=char_tokenizer,
        compute_metrics=compute_metrics,
    )
    metrics = trainer.evaluate()
    assert metrics["eval_rows"] == 2 * len(ROWS) and len(seen) == 1
    logits, ids = seen[0].predictions, seen[0].label_ids
    assert logits.shape[:2] == ids.shape and logits.shape[2] == len(char_tokenizer)
    row = tokenize_row(ROWS[0], 0, char_tokenizer, None, 32, None)
    chosen = row["prompt_ids"] + row["chosen_ids"]
    rejected = row["prompt_ids"] + row["rejected_ids"]
    assert ids[0, : len(chosen)].tolist() == chosen and ids[len(ROWS), : len(rejected)].tolist() == rejected
    with torch.no_grad():
        direct = model(torch.tensor([chosen])).logits[0]
    assert torch.allclose(torch.as_tensor(logits[0, : len(chosen)]), direct, atol=1e-4)


def test_trainer_attributes_tags_and_missing_train_dataset(tmp_path, char_tokenizer):
    peft = pytest.importorskip("peft")
    model = make_tiny_llama(len(char_tokenizer))
    trainer = DPOTrainer(
        model, args=config(tmp_path), eval_dataset=Dataset.from_list(ROWS), processing_class=char_tokenizer
    )
    assert isinstance(trainer.ref_model, torch.nn.Module) and trainer.ref_model is not trainer.model
    assert {"dpo", "hf_dpo"} <= set(trainer.model.model_tags)
    assert "eval_loss" in trainer.evaluate()
    with pytest.raises(ValueError, match="train\\(\\) needs a train_dataset"):
        trainer.train()
    lora = peft.LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM")
    with_peft = DPOTrainer(
        make_tiny_llama(len(char_tokenizer)),
        args=config(tmp_path),
        processing_class=char_tokenizer,
        train_dataset=Dataset.from_list(ROWS),
        peft_config=lora,
    )
    assert with_peft.ref_model is None
    pre = DPOTrainer(
        make_tiny_llama(len(char_tokenizer)),
        args=config(tmp_path, precompute_ref_log_probs=True),
        processing_class=char_tokenizer,
        train_dataset=Dataset.from_list(ROWS),
    )
    assert pre.ref_model is None


def test_remove_unused_columns_true_is_harmless(tmp_path, char_tokenizer):
    rows = Dataset.from_list([{**r, "source": "x"} for r in ROWS])
    trainer = DPOTrainer(
        make_tiny_llama(len(char_tokenizer)),
        args=config(tmp_path, remove_unused_columns=True),
        train_dataset=rows,
        eval_dataset=rows,
        processing_class=char_tokenizer,
    )
    trainer.train()
    assert trainer.state.global_step == 2 and "eval_loss" in trainer.evaluate()


def test_trl_config_is_refused_naming_both_modules_and_converts(tmp_path, char_tokenizer):
    trl = pytest.importorskip("trl")
    theirs = trl.DPOConfig(
        output_dir=str(tmp_path), use_cpu=True, bf16=False, beta=0.3, max_length=48, report_to=[]
    )
    with pytest.raises(
        TypeError, match=r"trl\.trainer\.dpo_config\.DPOConfig.*hf_dpo\.DPOConfig.*dpo_config_from"
    ):
        DPOTrainer(make_tiny_llama(len(char_tokenizer)), args=theirs, processing_class=char_tokenizer)
    ours = dpo_config_from(theirs)
    assert isinstance(ours, DPOConfig) and (ours.beta, ours.max_length, ours.output_dir) == (
        0.3,
        48,
        str(tmp_path),
    )
    assert ours.hub_token is None  # the real value, not to_dict()'s "<HUB_TOKEN>" placeholder
    trl_only = trl.DPOConfig(output_dir="x", use_cpu=True, bf16=False, ld_alpha=0.5)
    if not hasattr(ours, "ld_alpha"):
        with pytest.raises(ValueError, match="no field ld_alpha"):
            dpo_config_from(trl_only)


def test_quantization_config_gives_the_clear_message_on_every_path(tmp_path, char_tokenizer):
    from transformers import BitsAndBytesConfig

    try:
        import bitsandbytes  # noqa: F401

        if torch.cuda.is_available():
            pytest.skip("bitsandbytes and a GPU exist here: QLoRA is supported, no error to check")
    except ImportError:
        pass
    path = tmp_path / "m"
    make_tiny_llama(len(char_tokenizer)).save_pretrained(path)
    char_tokenizer.save_pretrained(path)
    clear = "QLoRA.*(bitsandbytes|CUDA GPU)"
    with pytest.raises((ImportError, RuntimeError), match=clear):
        DPOTrainer(
            str(path),
            args=config(tmp_path),
            train_dataset=Dataset.from_list(ROWS),
            quantization_config=BitsAndBytesConfig(load_in_4bit=True),
        )
    with pytest.raises((ImportError, RuntimeError), match=clear):  # the CLI's YAML spelling: a dict
        load_causal_lm(str(path), quantization_config={"load_in_4bit": True})
    with pytest.raises(ValueError, match="passed already loaded"):
        DPOTrainer(
            make_tiny_llama(len(char_tokenizer)),
            args=config(tmp_path),
            processing_class=char_tokenizer,
            train_dataset=Dataset.from_list(ROWS),
            quantization_config=BitsAndBytesConfig(load_in_4bit=True),
        )


def test_image_column_is_refused(tmp_path, char_tokenizer):
    rows = Dataset.from_list([{**r, "images": []} for r in ROWS])
    with pytest.raises(ValueError, match="image column .*text-only"):
        DPOTrainer(
            make_tiny_llama(len(char_tokenizer)),
            args=config(tmp_path),
            train_dataset=rows,
            processing_class=char_tokenizer,
        )


def test_bf16_model_passed_in_warns_once(tmp_path, char_tokenizer, caplog):
    with caplog.at_level(logging.WARNING, logger="hf_dpo"):
        DPOTrainer(
            make_tiny_llama(len(char_tokenizer)).to(torch.bfloat16),
            args=config(tmp_path),
            train_dataset=Dataset.from_list(ROWS),
            processing_class=char_tokenizer,
        )
        DPOTrainer(
            make_tiny_llama(len(char_tokenizer)),
            args=config(tmp_path),
            train_dataset=Dataset.from_list(ROWS),
            processing_class=char_tokenizer,
        )
    assert sum("no fp32 master copy" in r.message for r in caplog.records) == 1


def test_model_loaded_by_name_from_bf16_checkpoint_updates_every_tensor_at_lr_1e6(tmp_path, char_tokenizer):
    """The issue's evidence: a bf16 checkpoint trained in its own dtype changed 9 of 27 tensors in 3 steps."""
    path = tmp_path / "bf16"
    model = make_tiny_llama(len(char_tokenizer)).to(torch.bfloat16)
    model.config.dtype = torch.bfloat16
    model.save_pretrained(path)
    char_tokenizer.save_pretrained(path)
    trainer = DPOTrainer(
        str(path),
        args=config(tmp_path, max_steps=3, learning_rate=1e-6),
        train_dataset=Dataset.from_list(ROWS),
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    assert {p.dtype for p in before.values()} == {torch.float32}
    trainer.train()
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert len(changed) == len(before), sorted(set(before) - set(changed))


TOOL_TEMPLATE = (
    "{% if tools %}<tools>{{ tools | tojson }}</tools>\n{% endif %}"
    "{% if think %}<think>\n{% endif %}"
    "{% for m in messages %}<{{ m.role }}>"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}"
    "<call>{{ c.function.name }}({{ c.function.arguments }})</call>{% endfor %}{% endif %}"
    "{{ m.content }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)
TOOLS = [{"type": "function", "function": {"name": "add", "description": "adds", "parameters": {}}}]


def _call(name: str, args: str) -> dict:
    return {"type": "function", "function": {"name": name, "arguments": args}}


def _tool_conversation() -> tuple[dict, list[dict]]:
    """A user question and a chosen completion that calls a tool: assistant(call) -> tool -> assistant."""
    chosen = [
        {"role": "assistant", "tool_calls": [_call("add", "1,2")]},
        {"role": "tool", "name": "add", "content": "3"},
        {"role": "assistant", "content": "3"},
    ]
    return {"role": "user", "content": "1+2?"}, chosen


def test_tool_calling_rows_render_tools_and_template_kwargs(tmp_path, char_tokenizer):
    char_tokenizer.chat_template = TOOL_TEMPLATE
    user = {"role": "user", "content": "1+2?"}
    call = {"role": "assistant", "tool_calls": [_call("add", "1,2")]}
    tool = {"role": "tool", "name": "add", "content": "3"}
    rows = [
        {
            "prompt": [user],
            "chosen": [call],
            "rejected": [{"role": "assistant", "content": "4"}],
            "tools": TOOLS,
            "chat_template_kwargs": {"think": None},
        },
        {
            "prompt": [user, {**call, "content": None}, tool],
            "chosen": [{"role": "assistant", "content": "3"}],
            "rejected": [{"role": "assistant", "content": "4"}],
            "tools": None,
            "chat_template_kwargs": {"think": True},
        },
    ]
    dataset = Dataset.from_list(rows)  # Arrow fills absent keys with None; those must not reach the template
    tokenized, _ = tokenize_dataset(dataset, char_tokenizer, get_renderer(None, char_tokenizer), None, None)
    text = [
        "".join(char_tokenizer.convert_ids_to_tokens(r["prompt_ids"] + r["chosen_ids"])) for r in tokenized
    ]
    assert text[0].startswith('<tools>[{"type": "function", "function": {"name": "add"')
    assert "<user>1+2?</s>\n<assistant><call>add(1,2)</call></s>" in text[0]
    assert text[1].startswith("<think>\n<user>1+2?</s>\n<assistant><call>add(1,2)</call></s>\n<tool>3</s>\n")
    assert text[1].endswith("<assistant>3</s>")
    trainer = DPOTrainer(
        make_tiny_llama(len(char_tokenizer)),
        args=config(tmp_path, max_length=400),
        train_dataset=dataset,
        processing_class=char_tokenizer,
    )
    assert [r["chosen_ids"] for r in trainer.train_dataset] == [r["chosen_ids"] for r in tokenized]


def test_tool_messages_are_checked_and_other_renderers_refuse_them(char_tokenizer):
    user = {"role": "user", "content": "q"}
    bad = [
        (
            {
                "prompt": [user, {"role": "user", "tool_calls": [_call("f", "")]}],
                "chosen": "a",
                "rejected": "b",
            },
            "only assistant turns call tools",
        ),
        (
            {"prompt": [user], "chosen": [{"role": "assistant", "tool_calls": []}], "rejected": "b"},
            "non-empty list of tool calls",
        ),
        (
            {"prompt": [user, {"role": "tool"}], "chosen": "a", "rejected": "b"},
            "prompt.1. is missing 'content'",
        ),
        (
            {"prompt": "q", "chosen": "a", "rejected": "b", "tools": TOOLS},
            "renderer 'chatml' cannot render template kwargs \\['tools'\\]",
        ),
        (
            {"prompt": [user], "chosen": "a", "rejected": "b", "tools": "[oops"},
            "field 'tools': not valid JSON",
        ),
    ]
    for row, message in bad:
        with pytest.raises(ValueError, match=message):
            tokenize_row(row, 3, char_tokenizer, get_renderer("chatml", char_tokenizer), None, None)
    row = {
        "prompt": [user],
        "chosen": [{"role": "assistant", "tool_calls": [_call("f", "")]}],
        "rejected": "b",
    }
    with pytest.raises(ValueError, match="renderer 'chatml' cannot render tool-calling messages"):
        tokenize_row(row, 0, char_tokenizer, get_renderer("chatml", char_tokenizer), None, None)


def test_tool_turns_inside_completions_are_rendered_and_trained_on(tmp_path, char_tokenizer):
    """chosen = assistant(tool call) -> tool -> assistant: the completion is everything after the prompt's
    generation header, tool output included (as TRL), and prompt ids + completion ids = the full rendering."""
    char_tokenizer.chat_template = TOOL_TEMPLATE
    user, chosen = _tool_conversation()
    rows = [{"prompt": [user], "chosen": chosen, "rejected": [{"role": "assistant", "content": "4"}]}] * 4
    renderer = get_renderer(None, char_tokenizer)
    pair = tokenize_row({**rows[0], "tools": TOOLS}, 0, char_tokenizer, renderer, None, None)
    full = char_tokenizer.apply_chat_template([user, *chosen], tools=TOOLS, tokenize=False)
    text = "".join(char_tokenizer.convert_ids_to_tokens(pair["prompt_ids"] + pair["chosen_ids"]))
    assert text == full.rstrip("\n")
    completion = "".join(char_tokenizer.convert_ids_to_tokens(pair["chosen_ids"]))
    assert completion == "<call>add(1,2)</call></s>\n<tool>3</s>\n<assistant>3</s>"
    for bad_roles, message in (
        ([chosen[1], chosen[2]], "start and end with the assistant; got roles \\['tool', 'assistant'\\]"),
        (chosen[:2], "got roles \\['assistant', 'tool'\\]"),
        ([chosen[0], user, chosen[2]], "got roles \\['assistant', 'user', 'assistant'\\]"),
    ):
        with pytest.raises(ValueError, match=f"row 5, field 'chosen': expected one assistant.*{message}"):
            tokenize_row({**rows[0], "chosen": bad_roles}, 5, char_tokenizer, renderer, None, None)
    trainer = DPOTrainer(
        make_tiny_llama(len(char_tokenizer)),
        args=config(tmp_path, max_length=200, max_steps=3),
        train_dataset=Dataset.from_list(rows),
        processing_class=char_tokenizer,
    )
    before = [p.detach().clone() for p in trainer.model.parameters()]
    history = trainer.train()
    assert torch.isfinite(torch.tensor(history.training_loss))
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))


def test_missing_train_dataset_fails_at_construction(tmp_path, char_tokenizer):
    with pytest.raises(ValueError, match="`train_dataset` is required.*eval_dataset=.*evaluate"):
        DPOTrainer(make_tiny_llama(len(char_tokenizer)), config(tmp_path), processing_class=char_tokenizer)


def test_assistant_only_loss_leaves_tool_turns_out_of_the_loss(tmp_path, char_tokenizer):
    """assistant_only_loss=True: the tool turn and the generation prompt after it are masked (fed, not
    scored), truncation cuts the mask with the ids, and the trainer's eval log-probs equal the masked sum of
    an independent forward; off (the default) every completion token is scored."""
    char_tokenizer.chat_template = TOOL_TEMPLATE
    user, chosen = _tool_conversation()
    row = {"prompt": [user], "chosen": chosen, "rejected": [{"role": "assistant", "content": "4"}]}
    renderer = get_renderer(None, char_tokenizer)
    pair = tokenize_row(row, 0, char_tokenizer, renderer, None, None, assistant_only_loss=True)
    tokens = char_tokenizer.convert_ids_to_tokens(pair["chosen_ids"])
    scored = "".join(t for t, m in zip(tokens, pair["chosen_loss_mask"], strict=True) if m)
    unscored = "".join(t for t, m in zip(tokens, pair["chosen_loss_mask"], strict=True) if not m)
    assert (scored, unscored) == ("<call>add(1,2)</call></s>\n3</s>", "<tool>3</s>\n<assistant>")
    assert pair["rejected_loss_mask"] == [1] * len(pair["rejected_ids"])
    assert "chosen_loss_mask" not in tokenize_row(row, 0, char_tokenizer, renderer, None, None)
    prompt_len = len(pair["prompt_ids"])
    # keep_end shortens the prompt first (to one token here), then keeps the completion's last tokens.
    for mode, limit, kept in (
        ("keep_start", prompt_len + 30, slice(0, 30)),
        ("keep_end", 31, slice(-30, None)),
    ):
        cut = tokenize_row(row, 0, char_tokenizer, renderer, limit, None, mode, True)
        assert len(cut["chosen_ids"]) == len(cut["chosen_loss_mask"]) == 30
        assert cut["chosen_loss_mask"] == pair["chosen_loss_mask"][kept]

    model = make_tiny_llama(len(char_tokenizer))
    ids = torch.tensor([pair["prompt_ids"] + pair["chosen_ids"]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, prompt_len - 1 : -1]
    token_logps = torch.log_softmax(logits, -1).gather(-1, torch.tensor(pair["chosen_ids"])[:, None])[:, 0]
    mask = torch.tensor(pair["chosen_loss_mask"], dtype=torch.bool)
    for only, expected in ((True, token_logps[mask].sum()), (False, token_logps.sum())):
        trainer = DPOTrainer(
            model,
            args=config(tmp_path, max_length=200, assistant_only_loss=only),
            train_dataset=Dataset.from_list([row] * 4),
            eval_dataset=Dataset.from_list([row] * 4),
            processing_class=char_tokenizer,
        )
        assert ("chosen_loss_mask" in trainer.eval_dataset.column_names) is only
        metrics = trainer.evaluate()
        assert metrics["eval_logps/chosen"] == pytest.approx(float(expected), abs=1e-4)
        if only:  # the masked tool tokens stay fed and the assistant's tokens train
            before = [p.detach().clone() for p in model.parameters()]
            assert torch.isfinite(torch.tensor(trainer.train().training_loss))
            changed = any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
            assert changed
            model = make_tiny_llama(len(char_tokenizer))  # fresh weights for the unmasked comparison


def test_assistant_only_loss_on_pretokenized_rows_without_masks_warns(tmp_path, char_tokenizer, caplog):
    char_tokenizer.chat_template = TOOL_TEMPLATE
    user, chosen = _tool_conversation()
    row = {"prompt": [user], "chosen": chosen, "rejected": [{"role": "assistant", "content": "4"}]}
    ids = tokenize_row(row, 0, char_tokenizer, get_renderer(None, char_tokenizer), None, None)
    with caplog.at_level(logging.WARNING, logger="hf_dpo"):
        DPOTrainer(
            make_tiny_llama(len(char_tokenizer)),
            args=config(tmp_path, max_length=200, assistant_only_loss=True),
            train_dataset=Dataset.from_list([ids] * 4),
            processing_class=char_tokenizer,
        )
    assert "train dataset is already tokenized and has no chosen_loss_mask/rejected_loss_mask" in caplog.text
