"""Chat renderers: a conversation -> prompt ids (ending with the generation prompt) and completion ids, with
``encode_prompt(m) + encode_completion(m, r)`` the tokenisation of the whole conversation. The built-ins and
custom renderers (:func:`register_renderer`) are described in docs/datasets.md ("Renderers")."""

from __future__ import annotations

import abc
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import jinja2
from transformers import PreTrainedTokenizerBase

from hf_dpo.chat import Message, check_messages, check_reply, uses_tools
from hf_dpo.registry import Registry

logger = logging.getLogger("hf_dpo")


class Renderer(abc.ABC):
    """Base class: subclasses write the prompt and completion *text*; this class tokenises it, with BOS, EOS
    and the prompt/completion boundary as in docs/datasets.md ("Renderers"). ``template_kwargs`` and
    tool-calling messages are refused unless ``renders_tools``."""

    name: ClassVar[str]
    renders_tools: ClassVar[bool] = False

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        bos = tokenizer.bos_token_id  # prepended iff the tokenizer puts it before plain text by default
        adds_bos = bos is not None and tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [bos]
        self._bos_id: int | None = bos if adds_bos else None
        # Every special token as text: EOS, BOS, pad, and added tokens flagged special (e.g. <|eot_id|>).
        special = set(tokenizer.all_special_tokens)
        special.update(tok.content for tok in tokenizer.added_tokens_decoder.values() if tok.special)
        self._special_strings = tuple(s for s in special if s)
        self._warned: set[str] = set()
        # One-entry caches: a pair renders and encodes the same prompt for encode_prompt and both replies.
        self._text_cache: tuple[str, str] = ("", "")
        self._ids_cache: tuple[str, list[int]] = ("", [])

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the caches, so that ``datasets`` fingerprints do not depend on past calls."""
        state = self.__dict__.copy()
        state.update(_warned=set(), _text_cache=("", ""), _ids_cache=("", []))
        return state

    @abc.abstractmethod
    def prompt_text(self, messages: list[Message]) -> str:
        """The conversation so far as text, ending with the assistant generation prompt."""

    @abc.abstractmethod
    def completion_text(self, messages: list[Message], reply: Message) -> str:
        """The text generated for ``reply`` right after ``prompt_text(messages)``."""

    def encode_prompt(
        self, messages: list[Message], template_kwargs: Mapping[str, Any] | None = None
    ) -> list[int]:
        """Token ids of the conversation so far, ending with the assistant generation prompt."""
        messages = check_messages(messages)
        self._check_renderable(messages, template_kwargs)
        return list(self._prompt_ids(self.cached_prompt_text(messages, template_kwargs)))

    def encode_completion(
        self,
        messages: list[Message],
        reply: Message | Sequence[Message],
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> list[int]:
        """Ids of ``reply`` (one assistant message, or with ``renders_tools`` a list of assistant and tool
        turns) as generated after ``encode_prompt(messages)``, ending with end-of-turn/EOS."""
        messages = check_messages(messages)
        if not isinstance(reply, (list, tuple)):
            replies = [check_reply(reply)]
        else:
            replies = check_messages(list(reply), "completion")
            check_reply(replies[0], "completion[0]")
        self._check_renderable([*messages, *replies], template_kwargs)
        if len(replies) > 1 and not self.renders_tools:
            raise ValueError(
                f"renderer {self.name!r} renders one assistant reply per completion, got {len(replies)} "
                "messages; use renderer_name='chat_template' for multi-turn (tool-using) completions."
            )
        prompt = self.cached_prompt_text(messages, template_kwargs)
        prompt_ids = self._prompt_ids(prompt)
        completion = replies[0] if len(replies) == 1 else replies
        text = self.completion_text(messages, completion, **(template_kwargs or {}))
        ends_with_special = any(text.rstrip().endswith(s) for s in self._special_strings)
        if ends_with_special:
            text = text.rstrip()  # drop the newline templates print after the end-of-turn token
        full_ids = self._with_bos(self._encode(prompt + text))
        if full_ids[: len(prompt_ids)] == prompt_ids:
            ids = full_ids[len(prompt_ids) :]
        else:
            ids = self._encode(text)
            self._warn_once(
                "boundary",
                f"renderer {self.name!r}: tokens merge across the prompt/completion boundary, so the "
                "completion is tokenised on its own (the model still sees prompt ids + completion ids). "
                f"Prompt ends {prompt[-40:]!r}, completion starts {text[:40]!r}.",
            )
        if not ends_with_special:
            if self.tokenizer.eos_token_id is None:
                raise ValueError(
                    f"renderer {self.name!r} needs tokenizer.eos_token to end the completion; set it "
                    "(e.g. tokenizer.eos_token = '</s>') or use a renderer whose turns end in a special token"
                )
            ids.append(self.tokenizer.eos_token_id)
        return ids

    def cached_prompt_text(
        self, messages: list[Message], template_kwargs: Mapping[str, Any] | None = None
    ) -> str:
        """``prompt_text(messages)``, remembered for the last conversation (and template kwargs) seen."""
        kwargs = dict(template_kwargs or {})
        key = json.dumps([messages, kwargs], sort_keys=True, default=str)
        if key != self._text_cache[0] or not messages:
            self._text_cache = (key, self.prompt_text(messages, **kwargs))
        return self._text_cache[1]

    def _check_renderable(self, messages: list[Message], template_kwargs: Mapping[str, Any] | None) -> None:
        if self.renders_tools or not (template_kwargs or uses_tools(messages)):
            return
        what = f"template kwargs {sorted(template_kwargs)}" if template_kwargs else "tool-calling messages"
        raise ValueError(
            f"renderer {self.name!r} cannot render {what} (tools, tool_calls, the 'tool' role and "
            "chat_template_kwargs need a chat template). Use renderer_name='chat_template' with a tokenizer "
            "whose chat template renders tools, or drop those columns."
        )

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _with_bos(self, ids: list[int]) -> list[int]:
        return [self._bos_id, *ids] if self._bos_id is not None and ids[:1] != [self._bos_id] else ids

    def _prompt_ids(self, prompt: str) -> list[int]:
        if prompt != self._ids_cache[0] or not self._ids_cache[1]:
            self._ids_cache = (prompt, self._with_bos(self._encode(prompt)))
        return self._ids_cache[1]

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message)


_RENDERERS: Registry[type[Renderer]] = Registry("renderer")


def register_renderer(name: str) -> Callable[[type[Renderer]], type[Renderer]]:
    """Class decorator registering a :class:`Renderer` subclass under ``name`` (re-registering replaces)."""

    def decorate(cls: type[Renderer]) -> type[Renderer]:
        if not (isinstance(cls, type) and issubclass(cls, Renderer)):
            raise TypeError(f"@register_renderer({name!r}) needs a Renderer subclass, got {cls!r}")
        cls.name = name
        return _RENDERERS.register(name, cls)

    return decorate


def available_renderers() -> list[str]:
    """Names accepted by :func:`get_renderer`."""
    return _RENDERERS.names()


def get_renderer(name: str | None, tokenizer: PreTrainedTokenizerBase) -> Renderer:
    """Build renderer ``name`` for ``tokenizer``; ``None`` picks ``chat_template`` if the tokenizer has one,
    else ``role_colon``."""
    if name is None:
        name = "chat_template" if getattr(tokenizer, "chat_template", None) else "role_colon"
    return _RENDERERS.get(name)(tokenizer)


@register_renderer("chat_template")
class ChatTemplateRenderer(Renderer):
    """The tokenizer's own chat template (``apply_chat_template``); the completion is what the full
    conversation adds after the prompt rendered with ``add_generation_prompt=True``."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "renderer 'chat_template' needs a tokenizer with a chat template, and this one has none. "
                "Use renderer_name='role_colon' for base models, 'chatml' or 'llama3', or set "
                "tokenizer.chat_template."
            )
        super().__init__(tokenizer)

    renders_tools = True

    def _render(self, messages: list[Message], add_generation_prompt: bool, **template_kwargs: Any) -> str:
        try:
            return self.tokenizer.apply_chat_template(
                list(messages), add_generation_prompt=add_generation_prompt, tokenize=False, **template_kwargs
            )
        except jinja2.exceptions.TemplateError as err:
            raise ValueError(f"the tokenizer's chat template rejected the conversation: {err}") from err

    def prompt_text(self, messages: list[Message], **template_kwargs: Any) -> str:
        return self._render(messages, add_generation_prompt=True, **template_kwargs)

    def completion_text(
        self, messages: list[Message], reply: Message | list[Message], **template_kwargs: Any
    ) -> str:
        """What the full conversation adds after the prompt (tool turns in ``reply`` included)."""
        prompt = self.cached_prompt_text(messages, template_kwargs)
        replies = reply if isinstance(reply, list) else [reply]
        full = self._render([*messages, *replies], add_generation_prompt=False, **template_kwargs)
        if full.startswith(prompt):
            return full[len(prompt) :]
        if len(replies) > 1:
            raise ValueError(
                "the chat template's rendering of the conversation with its tool turns does not start with "
                "its rendering of the prompt, so the completion cannot be cut from it; use a template that "
                "renders the prompt the same way in both cases"
            )
        # The template re-renders the conversation once the reply is added: take the reply as printed.
        content = reply["content"].strip()
        start = full.rfind(content) if content else -1
        if start < 0:
            raise ValueError(
                "the chat template's rendering of the full conversation does not start with its rendering "
                "of the prompt, and the reply text is not found in it either; use another renderer_name"
            )
        pairs = zip(prompt, full, strict=False)
        diverge = next((i for i, (a, b) in enumerate(pairs) if a != b), min(len(prompt), len(full)))
        self._warn_once(
            "rerender",
            "chat template re-renders the conversation once the reply is added, so the prompt is not a "
            "text prefix of the full conversation. Training uses the inference prompt followed by the reply "
            f"as the template prints it. First difference at char {diverge}: prompt has "
            f"{prompt[diverge : diverge + 60]!r}, full conversation has {full[diverge : diverge + 60]!r}.",
        )
        return full[start:]

    def assistant_mask(
        self,
        messages: list[Message],
        replies: list[Message],
        completion_ids: list[int],
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> list[int]:
        """1 for each of ``completion_ids`` (``encode_completion(messages, replies)``) the assistant wrote, 0
        for ``tool`` turns and the generation prompt after them (turn ends from turn-by-turn renderings)."""
        kwargs = dict(template_kwargs or {})
        prompt_ids = self._prompt_ids(self.cached_prompt_text(messages, kwargs))

        def boundary(turns: int, generation_prompt: bool) -> int:
            text = self._render([*messages, *replies[:turns]], generation_prompt, **kwargs)
            ids = self._with_bos(self._encode(text))[len(prompt_ids) :]
            if completion_ids[: len(ids)] != ids:
                raise ValueError(
                    f"cannot find where turn {turns} of the completion ends: the chat template's rendering "
                    "up to that turn is not a token prefix of the whole conversation's, so tool tokens "
                    "cannot be told from assistant tokens; set assistant_only_loss=False to train on all "
                    "completion tokens"
                )
            return len(ids)

        mask = [1] * len(completion_ids)
        for k, turn in enumerate(replies):
            if turn["role"] == "tool":
                start = boundary(k, False)
                end = boundary(k + 1, replies[k + 1]["role"] == "assistant")
                mask[start:end] = [0] * (end - start)
        return mask


@register_renderer("role_colon")
class RoleColonRenderer(Renderer):
    """Plain text for base models: ``System: ...\\n\\nUser: ...\\n\\nAssistant: ...``.
    The completion is ``" " + reply``; subclass and change ``role_names`` / ``separator`` to adapt."""

    role_names: ClassVar[dict[str, str]] = {"system": "System", "user": "User", "assistant": "Assistant"}
    separator: ClassVar[str] = "\n\n"

    def prompt_text(self, messages: list[Message]) -> str:
        turns = [f"{self.role_names[m['role']]}: {m['content']}" for m in messages]
        return self.separator.join([*turns, f"{self.role_names['assistant']}:"])

    def completion_text(self, messages: list[Message], reply: Message) -> str:
        return f" {reply['content']}" if reply["content"] else ""


@register_renderer("chatml")
class ChatMLRenderer(Renderer):
    """ChatML: ``<|im_start|>role\\ncontent<|im_end|>\\n`` per turn, no default system prompt."""

    def prompt_text(self, messages: list[Message]) -> str:
        turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return turns + "<|im_start|>assistant\n"

    def completion_text(self, messages: list[Message], reply: Message) -> str:
        return reply["content"] + "<|im_end|>"


@register_renderer("llama3")
class Llama3Renderer(Renderer):
    """Llama 3 Instruct: ``<|start_header_id|>role<|end_header_id|>\\n\\ncontent<|eot_id|>``, content stripped
    as in Meta's template, no default system prompt."""

    def prompt_text(self, messages: list[Message]) -> str:
        turns = "".join(
            f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content'].strip()}<|eot_id|>"
            for m in messages
        )
        return "<|begin_of_text|>" + turns + "<|start_header_id|>assistant<|end_header_id|>\n\n"

    def completion_text(self, messages: list[Message], reply: Message) -> str:
        return reply["content"].strip() + "<|eot_id|>"
