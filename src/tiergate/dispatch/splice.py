"""Splicing a resumed answer onto what the caller already has: pure functions, no I/O, no clock.

A stream cut after text reached the caller is resumed elsewhere in one of two ways:

- **continued**: the text sent so far (right-stripped) is given to a backend that continues a prefix; its answer
  should be the rest. A backend that ignores the prefix *restarts* the answer instead, so its text is checked:
  one that repeats everything the caller has is skipped past it (a restart), one that repeats the start of it
  for :data:`RESTART_MIN_CHARS` characters and then differs is a restart that diverged. Whitespace the caller
  already has at the end of its text is not sent twice.
- **restarted**: the request is sent again without the prefix (the backend does not continue one). The new answer
  is withheld until it covers the text sent; the matching part is skipped and the rest streamed. An answer that
  differs from what was sent, or ends before covering it, diverged.

A divergence is never passed on: :class:`Diverged` is raised, and the stream ends with an explicit error.

>>> s = Splicer("alpha beta ", restarted=True)
>>> [s.feed(t) for t in ("alp", "ha beta ga", "mma")], s.finish()
(['', 'ga', 'mma'], '')
>>> Splicer("alpha beta ", restarted=False).feed(" gamma")
'gamma'
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: In a continuation, this many characters (or all of the text sent, if shorter) repeated from the start of the
#: answer mean the backend restarted it. A true continuation rarely opens with the answer's own first words.
RESTART_MIN_CHARS = 8


class Diverged(Exception):
    """The resumed answer differs from the text the caller already has, from character ``at`` on."""

    def __init__(self, at: int, restarted: bool) -> None:
        how = "restarted answer" if restarted else "continuation (which restarted the answer)"
        super().__init__(f"the {how} diverged from the text already sent at character {at}")
        self.at = at


def common(a: str, b: str) -> int:
    """Length of the common prefix of ``a`` and ``b``.

    >>> common("alpha", "alps"), common("", "x")
    (3, 0)
    """
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def judge(sent: str, head: str, *, restarted: bool, ended: bool) -> int | None:
    """How many leading characters of ``head`` (the resumed answer so far) the caller already has; ``None``
    while ``head`` is too short to tell. Raises :class:`Diverged` for an answer that cannot be spliced.

    ``restarted``: the request was sent again without the prefix; otherwise ``sent.rstrip()`` was the prefix
    to continue. ``ended``: ``head`` is the whole answer.

    >>> judge("one two ", "one two three", restarted=True, ended=False)
    8
    >>> judge("one two ", "one t", restarted=True, ended=False) is None
    True
    >>> judge("one two ", " three", restarted=False, ended=False)  # a continuation; the space is not sent twice
    1
    >>> judge("one two ", "one two three", restarted=False, ended=False)  # a continuation that restarted
    8
    """
    k = common(sent, head)
    if k == len(sent):  # the whole text sent, repeated: a restart, skipped past
        return k
    agreeing = k == len(head)  # still a prefix of what was sent
    if restarted:
        if agreeing and not ended:
            return None
        raise Diverged(k, restarted)
    if k >= min(len(sent), RESTART_MIN_CHARS):  # the answer's start repeated, then different: a diverged restart
        if agreeing and not ended:
            return None
        raise Diverged(k, restarted)
    if agreeing and not ended:
        return None
    trailing = sent[len(sent.rstrip()) :]
    overlap = common(trailing, head)
    if overlap == len(head) and overlap < len(trailing) and not ended:
        return None  # only whitespace the caller has so far: wait for the first other character
    return overlap


@dataclass(slots=True)
class Splicer:
    """Feed the resumed answer's text as it comes; get back what to stream to the caller (``""`` while withheld).

    Raises :class:`Diverged` (from :meth:`feed` or :meth:`finish`) when the answer cannot be spliced.
    """

    sent: str
    restarted: bool
    decided: bool = False
    _head: list[str] = field(default_factory=list)

    def feed(self, text: str) -> str:
        if self.decided:
            return text
        self._head.append(text)
        return self._decide(ended=False)

    def finish(self) -> str:
        """The answer ended (or turned to a non-text event): what is still withheld, checked."""
        return "" if self.decided else self._decide(ended=True)

    def _decide(self, *, ended: bool) -> str:
        head = "".join(self._head)
        skip = judge(self.sent, head, restarted=self.restarted, ended=ended)
        if skip is None:
            return ""
        self.decided = True
        self._head.clear()
        return head[skip:]
