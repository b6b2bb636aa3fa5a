"""The vocabulary of a translation corpus: the special tokens and their ids, and :class:`Vocab`."""
from __future__ import annotations

from collections import Counter
from typing import Iterable, Sequence

from revbench.models.seq2seq.inputs import BOS_INDEX, EOS_INDEX, PAD_INDEX, UNK_INDEX

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"     # ids: PAD_INDEX, UNK_INDEX, BOS_INDEX, EOS_INDEX
SPECIALS = (PAD, UNK, BOS, EOS)


class Vocab:
    """Token <-> id map with ``<pad>``=0, ``<unk>``=1, ``<s>``=2, ``</s>``=3, then words.

    Words are ordered by descending frequency, ties alphabetically (deterministic).
    """

    def __init__(self, words: Iterable[str] = ()):
        self.itos: list[str] = list(SPECIALS)
        for w in words:
            if w not in SPECIALS:
                self.itos.append(w)
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("vocabulary words must be distinct")

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], min_freq: int = 1, max_size: int | None = None) -> "Vocab":
        """Vocabulary of the words occurring at least ``min_freq`` times (at most ``max_size`` words)."""
        if min_freq < 1:
            raise ValueError(f"min_freq must be >= 1, got {min_freq}")
        counts = Counter(w for s in sentences for w in s)
        words = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
        if max_size is not None:
            words = words[:max_size]
        return cls(words)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: object) -> bool:
        return word in self.stoi

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Ids of ``tokens`` (no ``<s>``/``</s>`` added); unknown words map to ``<unk>``."""
        stoi = self.stoi
        return [stoi.get(t, UNK_INDEX) for t in tokens]

    def decode(self, ids: Iterable[int], strip_special: bool = True) -> list[str]:
        """Tokens of ``ids``; with ``strip_special`` stop at ``</s>`` and drop ``<pad>``/``<s>``."""
        out: list[str] = []
        for i in ids:
            i = int(i)
            if strip_special:
                if i == EOS_INDEX:
                    break
                if i in (PAD_INDEX, BOS_INDEX):
                    continue
            out.append(self.itos[i])
        return out
