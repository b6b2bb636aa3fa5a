"""Tokenised corpus BLEU (sacrebleu, as multi-bleu.perl): :class:`BleuResult` and :func:`bleu`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass
class BleuResult:
    """Corpus BLEU (0-100) with sacrebleu's signature and the n-gram statistics behind it."""

    score: float
    signature: str
    precisions: list[float]
    brevity_penalty: float
    sys_len: int
    ref_len: int

    def __str__(self) -> str:
        return f"BLEU = {self.score:.2f} ({self.signature})"


def bleu(hypotheses: Sequence[Sequence[str] | str], references: Sequence[Sequence[str] | str]) -> BleuResult:
    """Corpus BLEU of tokenised hypotheses against one tokenised reference each.

    Items are token lists or space-joined strings of the tokenised, lower-cased text (as in
    ``ParallelSplit.tgt_tokens``, ``@-@`` included). sacrebleu runs with ``tokenize="none"`` and
    ``lowercase=True``, which is multi-bleu.perl on tokenised text, the BLEU the paper reports. It is
    NOT comparable with detokenised SacreBLEU (signature ``tok:13a``); the returned signature says
    which one this is.
    """
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise ValueError("BLEU needs at least one sentence")
    try:
        from sacrebleu.metrics import BLEU
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
        raise ModuleNotFoundError("BLEU needs sacrebleu: pip install 'revbench[nmt]'") from exc

    def text(x):
        return x if isinstance(x, str) else " ".join(x)

    metric = BLEU(tokenize="none", lowercase=True, force=True)
    res = metric.corpus_score([text(h) for h in hypotheses], [[text(r) for r in references]])
    return BleuResult(
        score=float(res.score),
        signature=str(metric.get_signature()),
        precisions=[float(p) for p in res.precisions],
        brevity_penalty=float(res.bp),
        sys_len=int(res.sys_len),
        ref_len=int(res.ref_len),
    )
