"""The attention encoder-decoder (MacKay et al. 2018, section 5): the model, its sides, a batch, how its
chains connect for a training method, and inference. See ``revbench.models.seq2seq.model`` for the design."""
from revbench.models.seq2seq.batch import BatchRun, attention_logits
from revbench.models.seq2seq.inputs import BOS_INDEX, EOS_INDEX, PAD_INDEX, UNK_INDEX, Batch, make_batch
from revbench.models.seq2seq.decode import Decoder, Encoded, encode, evaluate_batch, select_carry
from revbench.models.seq2seq.model import ContextSpec, Seq2Seq, Seq2SeqMasks

__all__ = ["BOS_INDEX", "EOS_INDEX", "PAD_INDEX", "UNK_INDEX", "Batch", "BatchRun", "ContextSpec", "Decoder", "Encoded", "Seq2Seq", "Seq2SeqMasks", "attention_logits", "encode",
           "evaluate_batch", "make_batch", "select_carry"]
