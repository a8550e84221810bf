"""Preference rows -> ``prompt_ids``, ``chosen_ids``, ``rejected_ids``. Rows use TRL's columns
(docs/datasets.md): text (the prompt with the tokenizer's special tokens, each completion without them plus
EOS; rendered if a renderer is given) or message lists rendered by ``hf_dpo.tokens.renderers``. Implicit
prompts, truncation and skips: docs/trainer.md. Malformed rows raise ``ValueError`` naming the row index, the
field and the fix."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Mapping
from typing import Any

from datasets import Dataset, IterableDataset

from hf_dpo.chat import MESSAGES_FIX, Message, check_messages, is_empty_reply, row_error
from hf_dpo.tokens.renderers import get_renderer

logger = logging.getLogger("hf_dpo")

TOKEN_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")
REF_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps")  # precomputed reference log-probs, per pair
# With assistant_only_loss: 1 per completion token the assistant wrote, 0 for tool-turn tokens (not scored).
MASK_COLUMNS = ("chosen_loss_mask", "rejected_loss_mask")
IMAGE_COLUMNS = ("image", "images")


def template_kwargs_of(row: Mapping[str, Any], index: int) -> dict[str, Any]:
    """The row's ``tools`` and ``chat_template_kwargs`` as ``apply_chat_template`` keyword arguments; None
    values (Arrow's fill for keys other rows have) are dropped."""
    kwargs = row.get("chat_template_kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise _row_error(
            index,
            "chat_template_kwargs",
            f"expected a dict, got {type(kwargs).__name__}",
            'store a dict of chat template arguments, e.g. {"enable_thinking": false}',
        )
    out = {k: v for k, v in kwargs.items() if v is not None}
    tools = row.get("tools")
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError as err:
            raise _row_error(
                index, "tools", f"not valid JSON ({err})", "store a JSON list of tool schemas"
            ) from err
    if tools is not None:
        if not isinstance(tools, (list, tuple)):
            raise _row_error(
                index, "tools", f"expected a list of tool schemas, got {type(tools).__name__}", "store a list"
            )
        out["tools"] = list(tools)
    return out


def _row_error(index: int, field: str, problem: str, fix: str) -> ValueError:
    return row_error(field, problem, fix, row=index)


def _check_text(value: Any, index: int, field: str) -> str:
    if not isinstance(value, str):
        raise _row_error(index, field, f"expected a string, got {type(value).__name__}", "store text there")
    if not value.strip():
        raise _row_error(index, field, "the text is empty", "drop the row or fill in the completion")
    return value


def _check_messages(value: Any, index: int, field: str) -> list[Message]:
    """A field that is not text: a non-empty list of messages (``hf_dpo.chat.check_messages``)."""
    if not isinstance(value, (list, tuple)) or not value:
        got = type(value).__name__ if value or isinstance(value, (int, float)) else "an empty value"
        raise _row_error(
            index, field, f"expected text or a non-empty list of messages, got {got}", MESSAGES_FIX
        )
    try:
        return check_messages(value, field)
    except ValueError as err:
        raise _row_error(index, field, str(err), MESSAGES_FIX) from err


def _reply(value: Any, index: int, field: str) -> Message | list[Message]:
    """The completion of a conversational row: text or one assistant reply (as a message), or a tool-using
    sequence of assistant and ``tool`` turns that starts and ends with the assistant (returned as a list)."""
    if isinstance(value, str):
        return {"role": "assistant", "content": _check_text(value, index, field)}
    messages = _check_messages([value] if isinstance(value, Mapping) else value, index, field)
    roles = [m["role"] for m in messages]
    if roles[0] != "assistant" or roles[-1] != "assistant" or set(roles) - {"assistant", "tool"}:
        raise _row_error(
            index,
            field,
            "expected one assistant message, or assistant and tool turns that start and end with the "
            f"assistant; got roles {roles}",
            'put earlier turns in "prompt" and keep only the assistant\'s reply (and its tool turns) here',
        )
    if any(m["role"] == "assistant" and is_empty_reply(m) for m in messages):
        raise _row_error(index, field, "an assistant reply is empty", "drop the row or fill in the reply")
    return messages[0] if len(messages) == 1 else messages


def split_row(
    row: Mapping[str, Any], index: int
) -> tuple[str | list[Message], str | Message | list[Message], str | Message | list[Message]]:
    """Normalise a row into (prompt, chosen, rejected): all text, or messages and two ``_reply`` replies."""
    for field in ("chosen", "rejected"):
        if field not in row or row[field] is None:
            raise _row_error(index, field, "missing", f"add a {field!r} column (string or message list)")
    chosen, rejected = row["chosen"], row["rejected"]
    prompt = row.get("prompt")
    if prompt is None:  # implicit prompt
        if isinstance(chosen, str) and isinstance(rejected, str):
            shared = os.path.commonprefix([chosen, rejected])
            if chosen != rejected:
                shared = shared[: max(shared.rfind(" "), shared.rfind("\n"), 0)]
            return shared, chosen[len(shared) :], rejected[len(shared) :]
        chosen_msgs = _check_messages(chosen, index, "chosen")
        rejected_msgs = _check_messages(rejected, index, "rejected")
        n = 0
        while n < min(len(chosen_msgs), len(rejected_msgs)) - 1 and chosen_msgs[n] == rejected_msgs[n]:
            n += 1
        return (
            chosen_msgs[:n],
            _reply(chosen_msgs[n:], index, "chosen"),
            _reply(rejected_msgs[n:], index, "rejected"),
        )
    if isinstance(prompt, str) and isinstance(chosen, str) and isinstance(rejected, str):
        return tuple(_check_text(row[field], index, field) for field in ("prompt", "chosen", "rejected"))
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": _check_text(prompt, index, "prompt")}]
    else:
        messages = _check_messages(prompt, index, "prompt")
    return messages, _reply(chosen, index, "chosen"), _reply(rejected, index, "rejected")


def _bos(tokenizer: Any) -> list[int]:
    """The ids the tokenizer adds before any text (e.g. BOS); empty for tokenizers that add none."""
    return tokenizer("")["input_ids"]


def select_renderer(first_row: Mapping[str, Any], tokenizer: Any, renderer_name: str | None) -> Any | None:
    """The named chat renderer, or the default one for conversational rows; None (raw text) for text rows."""
    if renderer_name is None and isinstance(first_row.get("chosen"), str):
        return None
    return get_renderer(renderer_name, tokenizer)


def encode_prompt(prompt: str | list[Message], tokenizer: Any, renderer: Any | None) -> list[int]:
    """Prompt ids as the model is fed them: raw text with special tokens, or the rendered conversation."""
    if renderer is None:
        if not isinstance(prompt, str):
            raise ValueError("conversational prompt but no renderer; pass renderer_name")
        return list(tokenizer(prompt)["input_ids"]) if prompt else _bos(tokenizer)
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    return list(renderer.encode_prompt(messages))


def _keep_prompt_end(prompt_ids: list[int], limit: int, tokenizer: Any) -> list[int]:
    """The last ``limit`` prompt tokens, the leading BOS kept (within ``limit``) if the prompt had one."""
    bos = _bos(tokenizer)
    head = bos if bos and prompt_ids[: len(bos)] == bos and limit > len(bos) else []
    return head + prompt_ids[len(head) - limit :]


def _assistant_masks(
    row: Mapping[str, Any], index: int, renderer: Any, chosen_ids: list[int], rejected_ids: list[int]
) -> list[list[int]]:
    """Per-token 0/1 masks of both completions: all ones unless a completion has tool turns."""
    prompt, chosen, rejected = split_row(row, index)
    masks = []
    for field, reply, ids in (("chosen", chosen, chosen_ids), ("rejected", rejected, rejected_ids)):
        if not isinstance(reply, list) or all(turn.get("role") != "tool" for turn in reply):
            masks.append([1] * len(ids))
            continue
        try:
            masks.append(renderer.assistant_mask(prompt, reply, ids, template_kwargs_of(row, index)))
        except ValueError as err:
            raise ValueError(f"row {index}, field {field!r}: {err}") from err
    return masks


def tokenize_row(
    row: Mapping[str, Any],
    index: int,
    tokenizer: Any,
    renderer: Any | None,
    max_length: int | None,
    max_prompt_length: int | None,
    truncation_mode: str = "keep_start",
    assistant_only_loss: bool = False,
) -> dict[str, list[int]] | str:
    """Token ids of one pair after truncation (docs/trainer.md "Truncation and skips"), or the skip reason.
    ``renderer``: see ``select_renderer`` (None: text rows); ``assistant_only_loss``: also ``MASK_COLUMNS``
    (0 on tool-turn tokens). Prompts keep their last tokens (and BOS), completions their first or last."""
    prompt_ids, chosen_ids, rejected_ids = _encode_row(row, index, tokenizer, renderer)
    masks = _assistant_masks(row, index, renderer, chosen_ids, rejected_ids) if assistant_only_loss else None
    if not prompt_ids:
        raise _row_error(
            index,
            "prompt",
            "the prompt encodes to no tokens, so the first completion token has no context",
            "give the row a prompt, or use a tokenizer that adds a BOS token",
        )
    if max_prompt_length is not None and len(prompt_ids) > max_prompt_length:
        prompt_ids = _keep_prompt_end(prompt_ids, max_prompt_length, tokenizer)
    if max_length is not None:
        keep_end = truncation_mode == "keep_end"
        if keep_end:
            fits = max(max_length - max(len(chosen_ids), len(rejected_ids)), 1)
            if len(prompt_ids) > fits:
                prompt_ids = _keep_prompt_end(prompt_ids, fits, tokenizer)
        elif truncation_mode != "keep_start":
            raise ValueError(f"truncation_mode must be 'keep_start' or 'keep_end', got {truncation_mode!r}")
        room = max_length - len(prompt_ids)
        if room < 1:
            return "prompt_too_long"
        cut = slice(-room, None) if keep_end else slice(room)
        chosen_ids, rejected_ids = chosen_ids[cut], rejected_ids[cut]
        masks = None if masks is None else [m[cut] for m in masks]  # masks are as long as their ids
    if chosen_ids == rejected_ids:  # also when truncation cut away everything that differed
        return "chosen_equals_rejected"
    truncated = (prompt_ids, chosen_ids, rejected_ids)
    pair = {column: list(ids) for column, ids in zip(TOKEN_COLUMNS, truncated, strict=True)}
    if masks is not None:
        if not all(any(m) for m in masks):
            return "no_assistant_tokens"
        pair.update(zip(MASK_COLUMNS, masks, strict=True))
    return pair


def _encode_row(
    row: Mapping[str, Any], index: int, tokenizer: Any, renderer: Any | None
) -> tuple[list[int], list[int], list[int]]:
    """Prompt, chosen and rejected token ids of one row, before truncation."""
    prompt, chosen, rejected = split_row(row, index)
    template_kwargs = template_kwargs_of(row, index)
    if renderer is None and isinstance(prompt, str):
        if template_kwargs:
            raise _row_error(
                index,
                "tools" if "tools" in template_kwargs else "chat_template_kwargs",
                "text rows are tokenized as raw text, so there is no chat template to pass it to",
                "use conversational rows (message lists), or set renderer_name='chat_template'",
            )
        eos = [tokenizer.eos_token_id]
        encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"] + eos  # noqa: E731
        return encode_prompt(prompt, tokenizer, None), encode(chosen), encode(rejected)
    if renderer is None:
        raise _row_error(index, "prompt", "conversational row but no renderer", "pass renderer_name")
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}] if prompt else []
        chosen = {"role": "assistant", "content": chosen}
        rejected = {"role": "assistant", "content": rejected}
    try:
        return (
            renderer.encode_prompt(prompt, template_kwargs),
            renderer.encode_completion(prompt, chosen, template_kwargs),
            renderer.encode_completion(prompt, rejected, template_kwargs),
        )
    except ValueError as err:
        raise ValueError(f"row {index}: {err}") from err


def tokenize_dataset(
    dataset: Dataset,
    tokenizer: Any,
    renderer: Any | None,
    max_length: int | None,
    max_prompt_length: int | None,
    num_proc: int | None = None,
    split_name: str = "train",
    truncation_mode: str = "keep_start",
    assistant_only_loss: bool = False,
) -> tuple[Dataset, Counter[str]]:
    """Tokenize every row (batched, ``datasets``-cached); the dataset with ``TOKEN_COLUMNS`` (and any
    ``REF_COLUMNS``) without the skipped pairs, and the skip counts by reason (logged once)."""
    args = (tokenizer, renderer, max_length, max_prompt_length, truncation_mode, assistant_only_loss)
    desc = f"Tokenizing {split_name} pairs"
    tokenized = _tokenize_map(dataset, dataset.column_names, split_name, args, num_proc=num_proc, desc=desc)
    skips = Counter(r for r in tokenized["skip_reason"] if r)
    if skips:
        total = sum(skips.values())
        detail = ", ".join(f"{reason}={count}" for reason, count in sorted(skips.items()))
        logger.warning("hf_dpo: skipped %d of %d %s pairs (%s)", total, len(dataset), split_name, detail)
        tokenized = tokenized.filter(
            lambda reasons: [r == "" for r in reasons],
            input_columns="skip_reason",
            batched=True,
            num_proc=num_proc,
        )
    if len(tokenized) == 0:
        raise ValueError(f"no {split_name} pairs left after tokenization (skipped: {dict(skips)})")
    return tokenized.remove_columns("skip_reason"), skips


def _tokenize_map(
    dataset: Dataset | IterableDataset, columns: list[str], split_name: str, args: tuple, **map_kwargs: Any
) -> Dataset | IterableDataset:
    """Batched ``dataset.map`` of ``tokenize_row(row, index, *args)`` (``args[-1]``: ``assistant_only_loss``):
    its columns and ``skip_reason`` ("": kept); ``REF_COLUMNS`` are kept, the other ``columns`` removed. Image
    columns are refused (text-only)."""
    found = [c for c in IMAGE_COLUMNS if c in set(columns)]
    if found:
        raise ValueError(
            f"the {split_name} dataset has an image column ({', '.join(found)}), but hf_dpo trains text-only "
            "causal LMs; vision-language preference data is not supported. Fix: drop the column "
            "(dataset.remove_columns(...)) to train on the text alone, or use trl.DPOTrainer with a "
            "vision-language model and its processor."
        )
    out_columns = (*TOKEN_COLUMNS, *MASK_COLUMNS) if args[-1] else TOKEN_COLUMNS

    def encode_batch(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        out: dict[str, list] = {c: [] for c in (*out_columns, "skip_reason")}
        for j, index in enumerate(indices):
            result = tokenize_row({k: v[j] for k, v in batch.items()}, index, *args)
            skipped = isinstance(result, str)
            for column in out_columns:
                out[column].append([] if skipped else result[column])
            out["skip_reason"].append(result if skipped else "")
        return out

    removed = [c for c in columns if c not in REF_COLUMNS]
    return dataset.map(encode_batch, with_indices=True, batched=True, remove_columns=removed, **map_kwargs)


def tokenize_iterable(
    dataset: IterableDataset,
    tokenizer: Any,
    renderer: Any | None,
    max_length: int | None,
    max_prompt_length: int | None,
    split_name: str = "train",
    truncation_mode: str = "keep_start",
    assistant_only_loss: bool = False,
) -> IterableDataset:
    """``tokenize_dataset`` for a streaming ``IterableDataset``, lazily; the first skip of each reason is
    logged."""
    first = next(iter(dataset), None)
    if first is None:
        raise ValueError(f"the {split_name} dataset is empty")
    logged: set[str] = set()

    def keep(reason: str) -> bool:
        if reason and reason not in logged:
            logged.add(reason)
            logger.warning(
                "hf_dpo: skipping %s pairs of the streamed %s dataset (logged once per reason)",
                reason,
                split_name,
            )
        return not reason

    args = (tokenizer, renderer, max_length, max_prompt_length, truncation_mode, assistant_only_loss)
    tokenized = _tokenize_map(dataset, list(dataset.column_names or first), split_name, args)
    return tokenized.filter(keep, input_columns="skip_reason").remove_columns("skip_reason")
