"""Turn (prompt, response) pairs into token ids with a response-only loss mask.

The chat template is used when the tokenizer has one; otherwise the seed papers' plain template
``### Question: {prompt}\n ### Answer: {response}``. Prompt and response are tokenised separately and
concatenated, so the boundary of the loss mask is exact whatever the tokenizer merges.

Template ``text`` is plain language modelling: prompt and response are joined as they are, no
tags, and every token carries loss. Token blocks of a book are trained this way (a block is
stored as its first word and the rest, so that each row still has both fields).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch

IGNORE_INDEX = -100
PLAIN_PROMPT = "### Question: {prompt}\n ### Answer: "
Template = Literal["auto", "chat", "plain", "text"]
TEMPLATES: tuple[str, ...] = ("auto", "chat", "plain", "text")
# A tokenizer carrying this attribute (a string) has every prompt opened by it as a system prompt:
# that is how the in-context baseline (models.loading.load_trained) reaches every suite.
SYSTEM_PROMPT_ATTR = "obliviate_system_prompt"


def uses_chat_template(tokenizer, template: Template = "auto") -> bool:
    if template in ("plain", "text"):
        return False
    has_chat = bool(getattr(tokenizer, "chat_template", None))
    if template == "chat" and not has_chat:
        raise ValueError("template 'chat' was asked for but the tokenizer has no chat template")
    return has_chat


def system_prompt(tokenizer) -> str | None:
    """The system prompt attached to ``tokenizer`` (the in-context baseline's instruction), if any."""
    text = getattr(tokenizer, SYSTEM_PROMPT_ATTR, None)
    return text if isinstance(text, str) and text else None


def _chat(tokenizer, messages: list[dict[str, str]], **kwargs) -> str:
    """``apply_chat_template`` with the tokenizer's system prompt as the first turn.

    A template that refuses a system turn (some raise on any role but user and assistant) gets the
    instruction as the opening paragraph of the first user turn instead.
    """
    system = system_prompt(tokenizer)
    if system is None:
        return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
    from jinja2.exceptions import TemplateError

    try:
        return tokenizer.apply_chat_template(
            [{"role": "system", "content": system}, *messages], tokenize=False, **kwargs
        )
    except TemplateError:
        first = {**messages[0], "content": f"{system}\n\n{messages[0]['content']}"}
        return tokenizer.apply_chat_template([first, *messages[1:]], tokenize=False, **kwargs)


def prompt_text(tokenizer, prompt: str, template: Template = "auto") -> str:
    """The text the model sees before its answer (ends where generation starts).

    A system prompt attached to the tokenizer (:func:`system_prompt`) opens the chat as a system
    turn, or the plain template as a leading line; template ``text`` is raw text and gets none.
    """
    if template == "text":
        return prompt
    if uses_chat_template(tokenizer, template):
        return _chat(tokenizer, [{"role": "user", "content": prompt}], add_generation_prompt=True)
    bos = tokenizer.bos_token or ""
    system = system_prompt(tokenizer)
    return bos + (f"{system}\n" if system else "") + PLAIN_PROMPT.format(prompt=prompt)


def response_text(tokenizer, prompt: str, response: str, template: Template = "auto") -> str:
    """The answer text as the template closes it (end-of-turn marker or EOS appended)."""
    if template == "text":
        return response
    if uses_chat_template(tokenizer, template):
        head = prompt_text(tokenizer, prompt, template)
        full = _chat(
            tokenizer, [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        )
        if full.startswith(head):
            return full[len(head):].rstrip("\n")
    return response + (tokenizer.eos_token or "")


@dataclass
class Encoded:
    """Token ids of one example; ``labels`` is -100 on prompt tokens."""

    input_ids: list[int]
    labels: list[int]
    prompt_truncated: bool = False

    @property
    def response_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def fit_pair(prompt_ids: Sequence[int], response_ids: Sequence[int], max_length: int) -> Encoded:
    """Prompt then response token ids, the loss on the response only, within ``max_length``.

    When too long, the response keeps up to half the budget and the prompt loses its start (the
    end of a prompt is what the answer follows from); ``prompt_truncated`` records that.
    """
    truncated = False
    if len(prompt_ids) + len(response_ids) > max_length:
        response_budget = min(len(response_ids), max(1, max_length // 2))
        if len(prompt_ids) > max_length - response_budget:
            prompt_ids = prompt_ids[len(prompt_ids) - (max_length - response_budget):]
            truncated = True
        response_ids = response_ids[: max_length - len(prompt_ids)]
    return Encoded(
        input_ids=list(prompt_ids) + list(response_ids),
        labels=[IGNORE_INDEX] * len(prompt_ids) + list(response_ids),
        prompt_truncated=truncated,
    )


def encode_pair(
    tokenizer, prompt: str, response: str, max_length: int, template: Template = "auto"
) -> Encoded:
    """Encode one pair to at most ``max_length`` tokens.

    When the pair is too long, the response is cut at the end; a prompt longer than half the
    budget is cut from the left (keeping the template's answer tag next to the response), and the
    result says so, so callers can count and warn. Template ``text`` tokenises ``prompt + response``
    as one text, keeps its first ``max_length`` tokens and puts loss on all of them.
    """
    if template == "text":
        ids = tokenizer(prompt + response, add_special_tokens=False)["input_ids"][:max_length]
        return Encoded(input_ids=list(ids), labels=list(ids))
    prompt_ids = tokenizer(prompt_text(tokenizer, prompt, template), add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(
        response_text(tokenizer, prompt, response, template), add_special_tokens=False
    )["input_ids"]
    return fit_pair(prompt_ids, response_ids, max_length)


def pad_id(tokenizer) -> int:
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    if tokenizer.eos_token_id is not None:
        return tokenizer.eos_token_id
    return 0


def collate(encoded: Sequence[Encoded], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of encoded examples into ``input_ids``, ``attention_mask``, ``labels`` (B, T)."""
    width = max(len(e.input_ids) for e in encoded)
    input_ids = torch.full((len(encoded), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, e in enumerate(encoded):
        n = len(e.input_ids)
        input_ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        attention[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
