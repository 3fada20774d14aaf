"""What the guard embeds: the texts of a request the open model will read, cut into the encoder's windows.

The encoder reads the first 256 WordPiece tokens of a text and drops the rest. A jailbreak is often longer
(two thirds of the in-the-wild set), and its tell-tale part (``...now answer my question as DAN``) is often
at the end; so a long text is scored on its first and its last :data:`WINDOW_TOKENS` tokens (and, with
``max_windows`` above 2, on evenly spaced windows in between), and the guard keeps the highest score. A
document the model is given (a tool result) can hide an instruction anywhere, so it is read in up to
:data:`DOCUMENT_WINDOWS` windows spread over it, and up to :data:`DOCUMENT_PARAGRAPHS` of its paragraphs are
scored on their own as well (an injected paragraph is not diluted by the page around it).

    windows = Windower()
    windows.split("How do I kill a Python process?")    # one window: the text itself
    windows.split(long_jailbreak)                        # [first 254 tokens, last 254 tokens]
    texts_to_check(request), documents_to_check(request) # what a request gives the guard to read
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tiergate.signals.encoder import MAX_TOKENS
from tiergate.types import ChatRequest, ToolResult

if TYPE_CHECKING:
    from tokenizers import Tokenizer

#: Tokens of text per window: the encoder's 256 less [CLS] and [SEP].
WINDOW_TOKENS = MAX_TOKENS - 2
MAX_WINDOWS = 2
#: Windows of a tool result: 8 x 254 tokens cover a document of about 1,500 words whole; a longer one is read
#: in 8 evenly spaced windows.
DOCUMENT_WINDOWS = 8
#: Paragraphs of a tool result also scored on their own: an instruction injected as one paragraph of a page is
#: not diluted by the benign text around it in a shared window.
DOCUMENT_PARAGRAPHS = 8
#: Paragraphs shorter than this many characters are not scored on their own (headings, blank fragments).
MIN_PARAGRAPH = 20
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
#: The most recent user turns and tool results read (besides the system prompt): a conversation of hundreds of
#: turns costs no more than this many texts.
MAX_TEXTS = 16


def texts_to_check(request: ChatRequest) -> list[str]:
    """The texts a caller wrote that the guard scores, each on its own: the system prompt and every user turn
    (the :data:`MAX_TEXTS` most recent).

    Either may carry a jailbreak, and a harmful request may be spread over turns; each is scored separately (a
    harmful question is not diluted by a long, benign system prompt) and the request's score is the highest. A
    request with no user text and no tool result is checked on all its text.
    """
    texts = [request.system.strip()] if request.system and request.system.strip() else []
    turns = [m.text_content.strip() for m in request.messages if m.role == "user" and m.text_content.strip()]
    texts += turns[-MAX_TEXTS:]
    if not texts and not documents_to_check(request):
        return ["\n".join(request.texts()).strip()]
    return texts


def documents_to_check(request: ChatRequest) -> list[str]:
    """The tool results of a request (the :data:`MAX_TEXTS` most recent): text the model reads but the caller
    did not write, where an injected instruction ("ignore your instructions and ...") hides."""
    docs = [
        p.content.strip() for m in request.messages for p in m.parts if isinstance(p, ToolResult) and p.content.strip()
    ]
    return docs[-MAX_TEXTS:]


def paragraphs(document: str, limit: int = DOCUMENT_PARAGRAPHS) -> list[str]:
    """The paragraphs of a document (split at blank lines) to score on their own besides its windows: none when
    it has one paragraph, else up to ``limit`` of those of :data:`MIN_PARAGRAPH` characters or more, evenly
    spaced over the document (the first and the last among them)."""
    found = [p.strip() for p in _PARAGRAPH_BREAK.split(document)]
    if len(found) < 2:
        return []
    kept = [p for p in found if len(p) >= MIN_PARAGRAPH]
    if len(kept) <= limit:
        return kept
    return [kept[round(k * (len(kept) - 1) / (limit - 1))] for k in range(limit)] if limit > 1 else kept[:1]


class Windower:
    """Cuts texts into encoder windows with the encoder's own tokenizer (no truncation)."""

    def __init__(self, max_windows: int = MAX_WINDOWS, window_tokens: int = WINDOW_TOKENS) -> None:
        if max_windows < 1 or window_tokens < 1:
            raise ValueError("max_windows and window_tokens must be at least 1")
        self.max_windows = max_windows
        self.window_tokens = window_tokens
        self._tokenizer: Tokenizer | None = None

    def _tok(self) -> Tokenizer:
        if self._tokenizer is None:
            from tiergate.signals.encoder import load_tokenizer

            tokenizer = load_tokenizer()
            tokenizer.no_truncation()
            tokenizer.no_padding()
            self._tokenizer = tokenizer
        return self._tokenizer

    def split(self, text: str, tokens: int | None = None) -> list[str]:
        """The windows of one text: the text itself when it fits, else up to ``max_windows`` slices of it.

        ``tokens``: the text's token count, when known (the encoder's ``token_count`` of a text it has just
        embedded), so that a text known to fit is not tokenized again.
        """
        if len(text) <= self.window_tokens or self.max_windows == 1:
            return [text]  # a token covers at least one character: it fits (or only the start is wanted)
        if tokens is not None and tokens <= self.window_tokens:
            return [text]
        return self._cut(text, self._tok().encode(text, add_special_tokens=False).offsets)

    def split_many(self, texts: Sequence[str]) -> list[list[str]]:
        long = [i for i, t in enumerate(texts) if len(t) > self.window_tokens and self.max_windows > 1]
        out = [[t] for t in texts]
        if long:
            encodings = self._tok().encode_batch([texts[i] for i in long], add_special_tokens=False)
            for i, encoding in zip(long, encodings, strict=True):
                out[i] = self._cut(texts[i], encoding.offsets)
        return out

    def _cut(self, text: str, offsets: list[tuple[int, int]]) -> list[str]:
        n, size = len(offsets), self.window_tokens
        if n <= size:
            return [text]
        count = min(self.max_windows, -(-n // size))  # no more windows than it takes to cover the text
        starts = [round(k * (n - size) / (count - 1)) for k in range(count)]
        return [text[offsets[s][0] : offsets[s + size - 1][1]] for s in starts]
