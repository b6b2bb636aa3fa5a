"""The model kinds: the language model and the attention encoder-decoder."""
from revbench.models.lm import RNNLM
from revbench.models.seq2seq import Seq2Seq

__all__ = ["RNNLM", "Seq2Seq"]
