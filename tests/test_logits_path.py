"""The logits path (sharded LM head, logit soft-capping) runs the head on scored columns only."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_llama, sequence_values
from test_layouts import PAIR_LENGTHS, random_pairs

from hf_dpo.batching.layouts import get_layout
from hf_dpo.modeling.forward import completion_columns, sequence_logps


def test_completion_columns_remap_the_flat_index() -> None:
    width = 6
    index = torch.tensor([1, 2, 3, 6 + 3, 6 + 5, 12 + 2])  # rows 0, 0, 0, 1, 1, 2
    keep, remapped = completion_columns(index, width)
    assert keep.tolist() == [1, 2, 3, 5]
    grid = torch.arange(3 * width).view(3, width)
    assert torch.equal(grid[:, keep].flatten()[remapped], index)  # same positions, read from (R, K)


@pytest.mark.parametrize(("name", "options"), [("padded", {}), ("prefix_shared", {"row_tokens": 30})])
def test_logits_path_equals_hidden_path_and_skips_prompt_only_columns(name: str, options: dict) -> None:
    model = make_tiny_llama(97, tie=False).eval()
    pairs = random_pairs(PAIR_LENGTHS)
    batch = get_layout(name, 0, **options)(pairs)
    head_rows = []
    handle = model.lm_head.register_forward_hook(lambda m, args, out: head_rows.append(args[0].shape[1]))
    with torch.no_grad():
        hidden = sequence_values(sequence_logps(model, batch, use_hidden=True))
        logits = sequence_values(sequence_logps(model, batch, use_hidden=False))
    handle.remove()
    torch.testing.assert_close(logits, hidden, rtol=1e-6, atol=1e-5)
    width = batch["input_ids"].shape[1]
    scored_columns = (batch["target_index"] % width).unique().numel()
    assert head_rows == [1, scored_columns] and scored_columns < width
