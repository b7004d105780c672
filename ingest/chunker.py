"""Token-sized chunks with exact character offsets, for Chinese and English text.

Built on llama-index's ``SentenceSplitter`` (paragraphs, then sentences, then clauses, words,
characters; chunks packed up to ``chunk_size`` tokens with ``chunk_overlap`` tokens carried over),
configured so nothing is downloaded: the tokenizer is all-MiniLM-L6-v2's (the embedder's, so a chunk
always fits its input), and sentence splitting is a regex that knows 。！？；… as well as English
sentence ends, instead of NLTK punkt. Two changes make it usable on a 140M-character corpus:

* token counts come from :class:`WordPieceCounter` (exact, and far faster than tokenizing Chinese);
* the packing step keeps character offsets (llama-index's returns bare strings), so every chunk
  is exactly ``text[char_start:char_end]``. The packing rules are llama-index's, and a test checks
  the chunks equal ``SentenceSplitter.split_text``'s.
"""

from __future__ import annotations

import re
import unicodedata

from llama_index.core.node_parser import SentenceSplitter

from chronorag.ingest.token_count import WordPieceCounter
from chronorag.types import ChunkDraft

# Chunking changes must bump CHUNKING_VERSION in chronorag.ingest.pipeline (documents then re-chunk
# at their next ingest); it lives there so an unchanged re-ingest never imports llama-index.
# A chunk also stays under this many characters per token of chunk_size: MiniLM's WordPiece counts a
# word of over 100 characters (a hash, a minified line, a DNA string) as one [UNK] token, so a token
# budget alone let a 200,000-character line become one "1-token" chunk that no prompt can hold.
# Real text stays well under it (English ~4-5 characters per token, Chinese ~1.3).
MAX_CHARS_PER_TOKEN = 8

# A sentence ends after 。！？；!?;… (or '.' before a space, quote or the end, so 3.5 and example.com
# stay whole), taking closing quotes/brackets and following whitespace with it; a line break ends one too.
_CLOSERS = re.escape("\"'”’)）]」』》〉")
_SENTENCE_END = re.compile(
    rf"(?:[。！？；!?;…]+|\.+(?=[\s{_CLOSERS}]|$))[{_CLOSERS}]*\s*|\n\s*"
)
# Inside an over-long sentence: split after commas, enumeration commas and colons (both widths).
CLAUSE_REGEX = r"[^,，、:：]+[,，、:：]*|[,，、:：]+"


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` (Chinese or English), lossless: ``''.join(result) == text``."""
    out: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        end = m.end()
        if end > start:
            out.append(text[start:end])
            start = end
    if start < len(text):
        out.append(text[start:])
    return out


class OffsetSentenceSplitter(SentenceSplitter):
    """llama-index's SentenceSplitter with a fast exact token counter and offset-keeping packing.

    It is still a regular llama-index node parser (``split_text``, ``get_nodes_from_documents``);
    :meth:`split_spans` is the offset-returning variant the chunker uses.
    """

    def __init__(self, chunk_size: int, chunk_overlap: int, counter: WordPieceCounter) -> None:
        super().__init__(
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            tokenizer=counter.token_ids,
            chunking_tokenizer_fn=split_sentences,
            secondary_chunking_regex=CLAUSE_REGEX,
            include_metadata=False,
        )
        # Plain instance attributes, not pydantic private ones: _token_size runs ~50 times per
        # document and pydantic's private-attribute lookup would cost more than the count itself.
        object.__setattr__(self, "counter", counter)
        object.__setattr__(self, "_token_size", counter.count)

    @classmethod
    def class_name(cls) -> str:
        return "OffsetSentenceSplitter"

    def split_spans(self, text: str) -> list[tuple[int, int, int | None]]:
        """``(start, end, tokens)`` per chunk; ``text[start:end]`` equals ``split_text``'s chunk.

        ``tokens`` is exact when the chunk is made of whole sentences (token counts add up across
        sentence boundaries); None when a sentence had to be cut and the chunk must be recounted.
        """
        if not text:
            return []
        splits = self._split(text, chunk_size=self.chunk_size)
        if sum(len(s.text) for s in splits) != len(text):  # every split function here is lossless
            raise AssertionError("sentence splitter lost characters")
        return _strip_spans(text, self._pack(splits))

    def _pack(self, splits: list) -> list[tuple[int, int, int | None]]:
        """SentenceSplitter._merge on (start, end, tokens, is_sentence) items instead of strings."""
        items = []
        pos = 0
        for s in splits:
            items.append((pos, pos + len(s.text), s.token_size, s.is_sentence))
            pos += len(s.text)
        size, overlap = self.chunk_size, self.chunk_overlap
        chunks: list[tuple[int, int, int | None]] = []
        cur: list[tuple] = []
        cur_len = 0
        new_chunk = True

        def emit() -> None:
            exact = all(it[3] for it in cur)
            chunks.append((cur[0][0], cur[-1][1], cur_len if exact else None))

        def close() -> None:
            nonlocal cur, cur_len, new_chunk
            emit()
            last, cur, cur_len, new_chunk = cur, [], 0, True
            i = len(last) - 1
            while i >= 0 and cur_len + last[i][2] <= overlap:  # carry the tail over as overlap
                cur_len += last[i][2]
                cur.insert(0, last[i])
                i -= 1

        i = 0
        while i < len(items):
            item = items[i]
            tokens, is_sentence = item[2], item[3]
            if tokens > size:
                raise ValueError("Single token exceeded chunk size")
            if cur_len + tokens > size and not new_chunk:
                close()
                continue
            if new_chunk and cur_len + tokens > size:
                while cur and cur_len + tokens > size:  # drop overlap until the split fits
                    cur_len -= cur.pop(0)[2]
            if is_sentence or cur_len + tokens <= size or new_chunk:
                cur_len += tokens
                cur.append(item)
                i += 1
                new_chunk = False
            else:
                close()
        if not new_chunk:
            emit()
        return chunks


def _strip_spans(text: str, spans: list[tuple]) -> list[tuple]:
    """Trim surrounding whitespace like llama-index's post-processing; drop blank chunks.

    Extra tuple fields after (start, end) are passed through.
    """
    out = []
    for start, end, *rest in spans:
        raw = text[start:end]
        body = raw.strip()
        if body:
            lead = len(raw) - len(raw.lstrip())
            out.append((start + lead, start + lead + len(body), *rest))
    return out


class Chunker:
    """Split a document into chunks of at most ``chunk_size`` MiniLM tokens with exact offsets."""

    def __init__(self, chunk_size: int = 256, chunk_overlap: int = 32, counter: WordPieceCounter | None = None) -> None:
        if chunk_size < 16:
            raise ValueError(f"chunk_size must be >= 16 tokens, got {chunk_size}")
        if not 0 <= chunk_overlap < chunk_size:
            raise ValueError(f"chunk_overlap must be in [0, chunk_size), got {chunk_overlap}")
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        self.counter = counter or WordPieceCounter()
        self.node_parser = OffsetSentenceSplitter(chunk_size, chunk_overlap, self.counter)

    def count_tokens(self, text: str) -> int:
        return self.counter.count(text)

    def split(self, text: str) -> list[ChunkDraft]:
        if not isinstance(text, str):
            raise TypeError(f"text must be str, not {type(text).__name__}")
        if not text.strip():
            return []
        drafts: list[ChunkDraft] = []
        for start, end, n in self.node_parser.split_spans(text):
            if n is None:
                n = self.counter.count(text[start:end])
            pieces = [(start, end, n)] if n <= self.chunk_size else self._hard_split(text, start, end)
            if any(e - s > self.max_chars for s, e, _ in pieces):
                # character windows, then token windows again for a window that is no longer one
                # long [UNK] word but many word pieces; both only ever shrink spans
                pieces = [p for s, e, k in pieces for p in
                          (self._char_split(text, s, e) if e - s > self.max_chars else [(s, e, k)])]
                pieces = [p for s, e, k in pieces for p in
                          (self._hard_split(text, s, e) if k > self.chunk_size else [(s, e, k)])]
            for s, e, k in pieces:
                drafts.append(ChunkDraft(len(drafts), text[s:e], s, e, k))
        return drafts

    @property
    def max_chars(self) -> int:
        return self.chunk_size * MAX_CHARS_PER_TOKEN

    def _char_split(self, text: str, start: int, end: int) -> list[tuple[int, int, int]]:
        """Windows of at most ``max_chars`` characters, cut at the last whitespace in the window's
        second half when there is one, never before a combining mark (it belongs to the letter)."""
        cuts = [start]
        while end - cuts[-1] > self.max_chars:
            limit = cuts[-1] + self.max_chars
            space = max(text.rfind(ws, cuts[-1] + self.max_chars // 2, limit) for ws in (" ", "\n", "\t"))
            cut = space + 1 if space > 0 else limit
            while cut > cuts[-1] + 1 and unicodedata.combining(text[cut]):
                cut -= 1
            cuts.append(cut)
        cuts.append(end)
        spans = _strip_spans(text, list(zip(cuts[:-1], cuts[1:])))
        return [(s, e, self.counter.count(text[s:e])) for s, e in spans]

    def _hard_split(self, text: str, start: int, end: int) -> list[tuple[int, int, int]]:
        """Token windows for the rare chunk whose parts were cut mid-word and came out too long."""
        offsets = self.counter.offsets(text[start:end])
        window = self.chunk_size
        while True:
            # cut at token starts; the first piece starts at `start`, the last ends at `end`
            cuts = [start] + [start + offsets[i][0] for i in range(window, len(offsets), window)] + [end]
            spans = _strip_spans(text, list(zip(cuts[:-1], cuts[1:])))
            pieces = [(s, e, self.counter.count(text[s:e])) for s, e in spans]
            if all(k <= self.chunk_size for _, _, k in pieces) or window <= 8:
                return pieces
            window -= 8
