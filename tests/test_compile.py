"""``torch.compile``: every layout works on a compiled model, and batch shapes do not recompile it.

Recompiles are counted with dynamo's own counters on the ``eager`` backend: whether dynamo retraces depends on
its guards, not on the backend, and ``eager`` keeps these CPU tests fast (an inductor run is in the report).
"""

from __future__ import annotations

import random

import pytest
import torch
import torch._dynamo
from conftest import sequence_values
from test_layouts import independent_logps, random_pairs, tiny_llama

from hf_dpo.batching.attention import MaskForm, layout_support
from hf_dpo.batching.layouts import choose_layout, get_layout
from hf_dpo.modeling.forward import sequence_logps


def graphs_compiled() -> int:
    return int(torch._dynamo.utils.counters["stats"]["unique_graphs"])


def varying_pairs(n: int, seed: int) -> list[dict[str, list[int]]]:
    rng = random.Random(seed)
    lengths = [(rng.randint(2, 30), rng.randint(1, 20), rng.randint(1, 20)) for _ in range(n)]
    return random_pairs(lengths, seed=seed)


def test_compiled_model_keeps_its_layout_support_and_mask_form() -> None:
    model = tiny_llama("sdpa")
    compiled = torch.compile(model, backend="eager")
    assert layout_support(compiled) == layout_support(model)
    layout = choose_layout(compiled)  # the auto choice sees the model class through OptimizedModule
    assert layout.name == "prefix_shared" and layout.mask_form is MaskForm.BOOLEAN_4D


@pytest.mark.parametrize(("name", "row_tokens"), [("padded", None), ("packed", "all")])
def test_compiled_forward_is_exact_and_compiles_once_over_varying_shapes(name: str, row_tokens) -> None:
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    model = tiny_llama("sdpa")
    compiled = torch.compile(model, backend="eager")
    layout = get_layout(name, 0, **({"row_tokens": row_tokens} if row_tokens else {}))
    shapes = set()
    for step in range(5):
        pairs = varying_pairs(4, seed=step)
        batch = layout(pairs)
        shapes.add(tuple(batch["input_ids"].shape))
        with torch.no_grad():
            logps = sequence_values(sequence_logps(compiled, batch))
            torch.testing.assert_close(logps, independent_logps(model, pairs), rtol=1e-6, atol=1e-5)
    assert len(shapes) >= 4  # the batch shapes did vary
    assert graphs_compiled() == 1


def test_trainer_with_torch_compile_trains_like_eager_and_compiles_at_most_twice(tmp_path) -> None:
    from datasets import Dataset

    from hf_dpo import DPOConfig, DPOTrainer

    class Tok:  # the trainer needs only eos/pad ids for pre-tokenized data
        eos_token_id, pad_token_id = 0, 0

        def save_pretrained(self, *args, **kwargs) -> None:
            pass

    data = Dataset.from_list(varying_pairs(40, seed=7))
    histories = {}
    for compile_model in (False, True):
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        args = DPOConfig(
            output_dir=str(tmp_path / str(compile_model)),
            per_device_train_batch_size=4,
            max_steps=10,
            learning_rate=1e-3,
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            torch_compile=compile_model,
            torch_compile_backend="eager",
        )
        trainer = DPOTrainer(tiny_llama(), args=args, train_dataset=data, processing_class=Tok())
        assert trainer.data_collator.layout.name == "prefix_shared"  # the default layout on sdpa
        trainer.train()
        histories[compile_model] = [h for h in trainer.state.log_history if "loss" in h]
        if compile_model:
            assert isinstance(trainer.model_wrapped, torch._dynamo.eval_frame.OptimizedModule)
            # 10 steps of varying shapes: one graph (a second one only for single-row batches).
            assert 1 <= graphs_compiled() <= 2
    assert len({h["num_tokens"] for h in histories[True]}) >= 5  # the lengths did vary
    for eager, compiled in zip(histories[False], histories[True], strict=True):
        assert compiled["loss"] == pytest.approx(eager["loss"], abs=1e-5)
    assert histories[True][-1]["loss"] != pytest.approx(histories[True][0]["loss"], abs=1e-4)  # it trained
