"""Turn (system prompt, ordered chunks, question) into token ids with chunk boundaries kept.

The prompt is [prefix][chunk 1]...[chunk N][suffix]: the prefix is the chat template up to the start
of the user message plus a fixed context header; each chunk is its own text plus a separator; the
suffix is the question and the rest of the template (end of user turn, assistant header). Every piece
is tokenised on its own and the ids concatenated, never the joined string, so a chunk's ids (and so
its cached KV) do not depend on its neighbours. All backends render the same text from this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

_SENTINEL = "\u2063CHRONORAG_USER_CONTENT\u2063"
ChunkRef = tuple[Any, str]  # (chunk_id, text)


class PromptError(ValueError):
    """The inputs cannot be rendered into a prompt."""


@dataclass(frozen=True)
class PromptLayout:
    context_header: str = "Answer the question using the documents below.\n\n"
    chunk_template: str = "{text}\n\n"
    question_template: str = "Question: {question}\nAnswer briefly."

    def chunk_text(self, text: str) -> str:
        return self.chunk_template.format(text=text)

    def user_content(self, chunk_texts: Sequence[str], question: str) -> str:
        body = "".join(self.chunk_text(t) for t in chunk_texts)
        return self.context_header + body + self.question_template.format(question=question)


@dataclass
class PromptParts:
    prefix_ids: list[int]
    chunk_ids: list[list[int]]
    suffix_ids: list[int]
    chunk_refs: list[str] = field(default_factory=list)

    @property
    def all_ids(self) -> list[int]:
        out = list(self.prefix_ids)
        for ids in self.chunk_ids:
            out.extend(ids)
        return out + list(self.suffix_ids)

    @property
    def chunk_spans(self) -> list[tuple[int, int]]:
        spans, at = [], len(self.prefix_ids)
        for ids in self.chunk_ids:
            spans.append((at, at + len(ids)))
            at += len(ids)
        return spans

    @property
    def n_tokens(self) -> int:
        return len(self.prefix_ids) + sum(map(len, self.chunk_ids)) + len(self.suffix_ids)


def fit_to_context(parts: PromptParts, limit: int) -> tuple[PromptParts, int]:
    """Leave out the last (lowest-ranked) chunks until the prompt has at most ``limit`` tokens;
    returns the parts and how many chunks were left out. PromptError when no chunk at all fits."""
    fixed = len(parts.prefix_ids) + len(parts.suffix_ids)
    if fixed > limit:
        raise PromptError(f"the question and prompt template take {fixed} tokens, more than the {limit} available")
    keep, total = len(parts.chunk_ids), parts.n_tokens
    while total > limit:
        keep -= 1
        total -= len(parts.chunk_ids[keep])
    dropped = len(parts.chunk_ids) - keep
    if not dropped:
        return parts, 0
    return PromptParts(parts.prefix_ids, parts.chunk_ids[:keep], parts.suffix_ids, parts.chunk_refs[:keep]), dropped


def chat_messages(system_prompt: str, chunk_texts: Sequence[str], question: str, layout: PromptLayout) -> list[dict]:
    """The same conversation as plain chat messages (for servers that apply their own template)."""
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return msgs + [{"role": "user", "content": layout.user_content(chunk_texts, question)}]


def split_template(tokenizer: Any, system_prompt: str) -> tuple[str, str]:
    """Text before and after the user message's content, as the chat template renders them."""
    msgs = chat_messages(system_prompt, [], "", PromptLayout("", "", ""))
    msgs[-1]["content"] = _SENTINEL
    if getattr(tokenizer, "chat_template", None):
        rendered = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    else:  # base models: a minimal, stable layout
        sys_part = f"{system_prompt}\n\n" if system_prompt else ""
        rendered = f"{sys_part}User: {_SENTINEL}\n\nAssistant:"
    if rendered.count(_SENTINEL) != 1:
        raise PromptError("chat template does not render the user message verbatim")
    before, after = rendered.split(_SENTINEL)
    return before, after


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False)) if text else []


def _needs_bos(tokenizer: Any) -> int | None:
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return None
    probe = tokenizer.encode("a", add_special_tokens=True)
    return bos if probe and probe[0] == bos else None


def encode_prefix(tokenizer: Any, system_prompt: str, layout: PromptLayout = PromptLayout()) -> list[int]:
    """BOS (where the tokenizer adds one) + the template up to the user content + the context header."""
    before, _ = split_template(tokenizer, system_prompt)
    ids = _encode(tokenizer, before + layout.context_header)
    bos = _needs_bos(tokenizer)
    if bos is not None and (not ids or ids[0] != bos):
        ids.insert(0, bos)
    return ids


def encode_chunk(tokenizer: Any, text: str, layout: PromptLayout = PromptLayout()) -> list[int]:
    return _encode(tokenizer, layout.chunk_text(text))


def encode_suffix(tokenizer: Any, system_prompt: str, question: str, layout: PromptLayout = PromptLayout()) -> list[int]:
    _, after = split_template(tokenizer, system_prompt)
    return _encode(tokenizer, layout.question_template.format(question=question) + after)


def build_prompt(
    tokenizer: Any,
    system_prompt: str,
    chunks: Sequence[ChunkRef],
    question: str,
    layout: PromptLayout = PromptLayout(),
) -> PromptParts:
    if not isinstance(question, str) or not question.strip():
        raise PromptError("question must be a non-empty string")
    for ref in chunks:
        if not (isinstance(ref, (tuple, list)) and len(ref) == 2 and isinstance(ref[1], str)):
            raise PromptError(f"each chunk must be a (chunk_id, text) pair, got {ref!r}")
    return PromptParts(
        prefix_ids=encode_prefix(tokenizer, system_prompt, layout),
        chunk_ids=[encode_chunk(tokenizer, text, layout) for _, text in chunks],
        suffix_ids=encode_suffix(tokenizer, system_prompt, question, layout),
        chunk_refs=[str(cid) for cid, _ in chunks],
    )
