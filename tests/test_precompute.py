"""Precomputed reference log-probs: same training as the on-the-fly reference, exact columns, disk cache
reused and invalidated, reference freed, PEFT, and a 2-process (gloo) run that gathers the full columns."""

import copy
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_llama, sequence_values
from peft import LoraConfig
from test_trainer import config, copy_task

import hf_dpo.reference.precompute as precompute
from hf_dpo import DPOTrainer
from hf_dpo.modeling.forward import sequence_logps
from hf_dpo.reference.policies import PrecomputedReference
from hf_dpo.reference.precompute import REF_COLUMNS, data_fingerprint

HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    path = tmp_path / "ref_cache"
    monkeypatch.setenv("HF_DPO_CACHE", str(path))
    return path


def independent_ref_logps(model, trainer, dataset):
    """Reference log-probs pair by pair (batch of one), straight from ``sequence_logps``."""
    out = []
    with torch.no_grad():
        for i in range(len(dataset)):
            row = {k: dataset[i][k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")}
            out.append(sequence_values(sequence_logps(model, trainer.data_collator([row]))))
    return torch.stack(out)


def run(tmp_path, tokenizer, precompute_ref: bool, steps: int = 6, **kwargs):
    model = make_tiny_llama(len(tokenizer), seed=3)
    args = config(
        tmp_path / str(precompute_ref),
        max_steps=steps,
        logging_steps=1,
        learning_rate=3e-3,
        precompute_ref_log_probs=precompute_ref,
        precompute_ref_batch_size=5,
        **kwargs,
    )
    trainer = DPOTrainer(
        model,
        args=args,
        processing_class=tokenizer,
        train_dataset=copy_task(48, 0),
        eval_dataset=copy_task(12, 1),
    )
    return trainer


def test_precomputed_reference_trains_exactly_like_the_on_the_fly_reference(tmp_path, char_tokenizer):
    initial = make_tiny_llama(len(char_tokenizer), seed=3)
    on_the_fly = run(tmp_path, char_tokenizer, False)
    pre = run(tmp_path, char_tokenizer, True)
    assert isinstance(pre.reference, PrecomputedReference)
    assert not any(isinstance(v, torch.nn.Module) for v in vars(pre.reference).values())  # reference freed
    for dataset in (pre.train_dataset, pre.eval_dataset):
        columns = torch.tensor([dataset[c] for c in REF_COLUMNS]).T
        assert torch.allclose(columns, independent_ref_logps(initial, pre, dataset), atol=1e-4, rtol=0)

    on_the_fly.train()
    pre.train()
    losses = [[h["loss"] for h in t.state.log_history if "loss" in h] for t in (on_the_fly, pre)]
    assert len(losses[0]) == 6 and losses[0] == pytest.approx(losses[1], abs=1e-5)
    for (name, a), (_, b) in zip(
        on_the_fly.model.named_parameters(), pre.model.named_parameters(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-5, rtol=0), name
    assert on_the_fly.evaluate()["eval_loss"] == pytest.approx(pre.evaluate()["eval_loss"], abs=1e-5)


def test_cache_is_reused_and_invalidated_by_model_or_data_changes(
    tmp_path, char_tokenizer, cache_dir, monkeypatch
):
    first = run(tmp_path, char_tokenizer, True)
    files = sorted(os.listdir(cache_dir))
    assert len(files) == 2 and all(f.endswith(".safetensors") for f in files)  # train and eval

    calls = []
    original = precompute.compute_reference_logps
    monkeypatch.setattr(
        precompute, "compute_reference_logps", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    second = run(tmp_path, char_tokenizer, True)
    assert calls == []
    assert list(second.train_dataset[REF_COLUMNS[0]]) == list(first.train_dataset[REF_COLUMNS[0]])

    model = make_tiny_llama(len(char_tokenizer), seed=3)
    with torch.no_grad():
        model.model.norm.weight[0] += 1e-3  # one weight changed
    args = config(tmp_path / "m", precompute_ref_log_probs=True)
    DPOTrainer(model, args=args, processing_class=char_tokenizer, train_dataset=copy_task(48, 0))
    assert calls == [1]

    data = copy_task(48, 0).to_list()
    data[7]["rejected"] = "a" if data[7]["rejected"] != "a" else "b"  # one token changed
    from datasets import Dataset

    DPOTrainer(
        make_tiny_llama(len(char_tokenizer), seed=3),
        args=args,
        processing_class=char_tokenizer,
        train_dataset=Dataset.from_list(data),
    )
    assert calls == [1, 1]
    assert len(os.listdir(cache_dir)) == 4


def test_data_fingerprint_depends_on_every_token_and_row_boundary():
    from datasets import Dataset

    row = {"prompt_ids": [1, 2], "chosen_ids": [3], "rejected_ids": [4, 5]}
    base = data_fingerprint(Dataset.from_list([row, row]))
    moved = {"prompt_ids": [1, 2, 3], "chosen_ids": [], "rejected_ids": [4, 5]}  # same flat ids, other split
    changed = {**row, "rejected_ids": [4, 6]}
    assert base == data_fingerprint(Dataset.from_list([row, row]))
    assert base != data_fingerprint(Dataset.from_list([row, moved]))
    assert base != data_fingerprint(Dataset.from_list([row, changed]))


def test_peft_with_precomputed_reference(tmp_path, char_tokenizer):
    base = make_tiny_llama(len(char_tokenizer), seed=3)
    untouched = copy.deepcopy(base)
    args = config(tmp_path, max_steps=4, learning_rate=1e-2, precompute_ref_log_probs=True)
    trainer = DPOTrainer(
        base,
        args=args,
        processing_class=char_tokenizer,
        train_dataset=copy_task(24, 0),
        eval_dataset=copy_task(8, 1),
        peft_config=LoraConfig(target_modules="all-linear", r=4, lora_alpha=8, lora_dropout=0.0),
    )
    columns = torch.tensor([trainer.train_dataset[c] for c in REF_COLUMNS]).T
    assert torch.allclose(
        columns, independent_ref_logps(untouched, trainer, trainer.train_dataset), atol=1e-4
    )
    trainer.train()
    assert trainer.state.global_step == 4 and "eval_loss" in trainer.evaluate()


def test_already_adapted_peft_model_with_precomputed_reference(tmp_path, char_tokenizer):
    """The columns are the initial adapter's log-probs; the snapshot adapter is deleted afterwards."""
    from peft import PeftModel
    from test_reference_peft import trained_adapter_dir

    from hf_dpo.reference.policies import REFERENCE_ADAPTER

    path = trained_adapter_dir(tmp_path, len(char_tokenizer))
    initial = PeftModel.from_pretrained(make_tiny_llama(len(char_tokenizer)), path)
    policy = PeftModel.from_pretrained(make_tiny_llama(len(char_tokenizer)), path, is_trainable=True)
    args = config(tmp_path, max_steps=3, learning_rate=1e-2, precompute_ref_log_probs=True)
    trainer = DPOTrainer(policy, args=args, processing_class=char_tokenizer, train_dataset=copy_task(16, 0))
    columns = torch.tensor([trainer.train_dataset[c] for c in REF_COLUMNS]).T
    expected = independent_ref_logps(initial, trainer, trainer.train_dataset)
    assert torch.allclose(columns, expected, atol=1e-4)
    bare = independent_ref_logps(make_tiny_llama(len(char_tokenizer)), trainer, trainer.train_dataset)
    assert not torch.allclose(columns, bare, atol=1e-2)  # the initial adapter, not the bare base
    assert REFERENCE_ADAPTER not in trainer.model.peft_config
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters() if n in before)


def test_eval_sets_given_later_are_precomputed_once_and_match_the_live_reference(
    tmp_path, char_tokenizer, monkeypatch
):
    """evaluate(eval_dataset=...) with a Dataset or a dict of them adds the reference columns (TRL 1.16's
    contract), reuses them on the next call, and scores exactly like the on-the-fly reference."""
    live, pre = run(tmp_path, char_tokenizer, False), run(tmp_path, char_tokenizer, True)
    later = copy_task(6, 9)
    calls = []
    original = precompute.compute_reference_logps
    monkeypatch.setattr(
        precompute, "compute_reference_logps", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    expected = live.evaluate(eval_dataset=later)["eval_loss"]
    assert pre.evaluate(eval_dataset=later)["eval_loss"] == pytest.approx(expected, abs=1e-6)
    assert pre.evaluate(eval_dataset=later)["eval_loss"] == pytest.approx(expected, abs=1e-6)
    assert calls == [1]  # the second call found the columns in the in-memory cache
    named = pre.evaluate(eval_dataset={"a": later, "b": copy_task(5, 11)})
    assert named["eval_a_loss"] == pytest.approx(expected, abs=1e-6) and "eval_b_loss" in named
    assert calls == [1, 1]
    at_init = pre.evaluate()["eval_loss"]
    pre.train()  # the reference was the initial policy itself: no copy, and gone once training starts
    for seen_before in (later, copy_task(4, 13)):  # TRL's contract: raises whether or not cached before
        with pytest.raises(ValueError, match="Cannot compute reference log-probs for a dataset passed to"):
            pre.evaluate(eval_dataset=seen_before)
    assert calls == [1, 1]
    # the set given at construction keeps its columns, also when passed again as the raw dataset
    trained_default, trained_raw = pre.evaluate()["eval_loss"], pre.evaluate(eval_dataset=copy_task(12, 1))
    assert trained_raw["eval_loss"] == pytest.approx(trained_default, abs=1e-6) and trained_default != at_init
    assert calls == [1, 1]


def test_explicit_ref_model_serves_eval_sets_after_training(tmp_path, char_tokenizer):
    ref = make_tiny_llama(len(char_tokenizer), seed=3)
    args = config(tmp_path, max_steps=2, precompute_ref_log_probs=True, precompute_ref_batch_size=4)
    kwargs = dict(args=args, processing_class=char_tokenizer, train_dataset=copy_task(16, 0))
    pre = DPOTrainer(make_tiny_llama(len(char_tokenizer), seed=3), ref_model=copy.deepcopy(ref), **kwargs)
    assert isinstance(pre.ref_model, torch.nn.Module)
    args = config(tmp_path / "live", max_steps=2)
    live = DPOTrainer(
        make_tiny_llama(len(char_tokenizer), seed=3),
        ref_model=ref,
        **{**kwargs, "args": args},
    )
    pre.train(), live.train()
    later = copy_task(6, 9)
    assert pre.evaluate(eval_dataset=later)["eval_loss"] == pytest.approx(
        live.evaluate(eval_dataset=later)["eval_loss"], abs=1e-5
    )


def test_iterable_dataset_with_precompute_is_refused_with_trls_message(tmp_path, char_tokenizer):
    stream = copy_task(8, 0).to_iterable_dataset()
    args = config(tmp_path, precompute_ref_log_probs=True)
    for kwargs in (
        dict(train_dataset=stream),
        dict(train_dataset=copy_task(8, 0), eval_dataset={"s": stream}),
    ):
        with pytest.raises(ValueError, match="precompute_ref_log_probs.*not supported with IterableDataset"):
            DPOTrainer(
                make_tiny_llama(len(char_tokenizer)), args=args, processing_class=char_tokenizer, **kwargs
            )


def test_two_processes_each_compute_a_shard_and_all_get_the_full_columns(tmp_path, char_tokenizer, cache_dir):
    single = run(tmp_path, char_tokenizer, True)
    expected = [list(single.train_dataset[c]) for c in REF_COLUMNS]
    env = {
        **os.environ,
        "HF_DPO_CACHE": str(tmp_path / "cache2"),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={port}",
        "--master_addr=127.0.0.1",
        __file__,
        str(tmp_path / "ranks"),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in (0, 1):
        result = json.loads((tmp_path / "ranks" / f"{rank}.json").read_text())
        assert result["world_size"] == 2 and result["computed_rows"] == 24
        for got, want in zip(result["columns"], expected, strict=True):
            assert got == pytest.approx(want, abs=1e-4)


def _worker(out_dir: str) -> None:
    """One rank of the 2-process test (run by ``torch.distributed.run``): precompute, record what it got."""
    from conftest import make_char_tokenizer

    computed = []
    original = precompute.compute_reference_logps

    def counting(*args, **kwargs):
        indices, logps = original(*args, **kwargs)
        computed.append(len(indices))
        return indices, logps

    precompute.compute_reference_logps = counting
    tokenizer = make_char_tokenizer()
    trainer = run(Path(out_dir), tokenizer, True)
    rank = trainer.accelerator.process_index
    result = {
        "world_size": trainer.accelerator.num_processes,
        "computed_rows": computed[0],
        "columns": [list(trainer.train_dataset[c]) for c in REF_COLUMNS],
    }
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / f"{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    _worker(sys.argv[1])


@pytest.mark.parametrize("layout", ["padded", "prefix_shared"])
def test_precomputed_reference_record_splits_the_columns_like_a_forward(layout):
    from hf_dpo.batching.collator import DPODataCollator

    pairs = [
        {"prompt_ids": [1, 5], "chosen_ids": [6, 7, 2], "rejected_ids": [8, 2], "ref_chosen_logps": -1.5},
        {"prompt_ids": [1], "chosen_ids": [9, 2], "rejected_ids": [10, 11, 12, 2], "ref_chosen_logps": -2.5},
    ]
    for i, pair in enumerate(pairs):
        pair["ref_rejected_logps"] = -10.0 - i
    batch = DPODataCollator(0, layout)(pairs)
    record = PrecomputedReference().logps(None, batch, 1024)
    assert record.chosen_logps.tolist() == [-1.5, -2.5]
    assert record.rejected_logps.tolist() == [-10.0, -11.0]
    forward = sequence_logps(make_tiny_llama(16).eval(), batch)
    assert torch.equal(record.chosen_num_tokens, forward.chosen_num_tokens)
    assert torch.equal(record.rejected_num_tokens, forward.rejected_num_tokens)
    assert record.chosen_num_tokens.tolist() == [3, 2] and record.rejected_num_tokens.tolist() == [2, 4]
    with pytest.raises(ValueError, match="no ref_chosen_logps/ref_rejected_logps columns"):
        PrecomputedReference().logps(None, {k: v for k, v in batch.items() if k not in REF_COLUMNS}, 1024)
