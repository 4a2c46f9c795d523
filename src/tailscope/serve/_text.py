"""Reply text from token ids as they are drawn: incremental decoding and stop strings.

Token ids are the record; text is derived from them. Streaming needs the text a token adds, which
is not ``decode([token])`` (byte-level and SentencePiece tokenizers merge spaces and split
multi-byte characters across tokens), so each reply re-decodes a short window of its last tokens
and emits what the window's text gained. Stop strings may straddle tokens: text that could still
turn into a stop string is held back until it cannot.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["ReplyText", "cut_at_stop"]


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """The text before the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _held_back(text: str, stop: Sequence[str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of some stop string."""
    best = 0
    for s in stop:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best


class ReplyText:
    """The text of one reply, grown a token at a time.

    ``push(token)`` returns the new text that is safe to show (never part of a stop string) and
    whether a stop string has now appeared; ``finish()`` returns the text still held back.
    """

    def __init__(self, tokenizer, stop: Sequence[str] = ()):
        self.tokenizer, self.stop = tokenizer, tuple(s for s in stop if s)
        self.tokens: list[int] = []
        self._prefix = self._read = 0  # decode window: tokens[_prefix:_read] gave the text already counted
        self.text = ""  # all text decoded so far (before any cut)
        self.sent = 0  # how much of it has been handed out
        self.stopped = False

    def _decode(self, tokens: Sequence[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def push(self, token: int) -> tuple[str, bool]:
        self.tokens.append(int(token))
        before = self._decode(self.tokens[self._prefix:self._read])
        after = self._decode(self.tokens[self._prefix:])
        # a trailing U+FFFD is an incomplete multi-byte character: wait for the rest of it
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += after[len(before):]
            self._prefix, self._read = self._read, len(self.tokens)
        if not self.stop:
            return self._release(len(self.text)), False
        search_from = max(0, self.sent - max(map(len, self.stop)))
        kept, found = cut_at_stop(self.text[search_from:], self.stop)
        if found:
            self.stopped = True
            return self._release(search_from + len(kept)), True
        return self._release(len(self.text) - _held_back(self.text, self.stop)), False

    def final(self) -> str:
        """The whole reply's text: every token decoded at once, cut before the first stop string."""
        return cut_at_stop(self._decode(self.tokens), self.stop)[0]

    def finish(self) -> str:
        """The rest of the reply's text that was not handed out yet."""
        full = self.final()
        shown = self.text[: self.sent]
        rest = full[len(shown):] if full.startswith(shown) else ""
        self.sent = len(self.text)
        return rest

    def _release(self, upto: int) -> str:
        if upto <= self.sent:
            return ""
        piece, self.sent = self.text[self.sent:upto], upto
        return piece
