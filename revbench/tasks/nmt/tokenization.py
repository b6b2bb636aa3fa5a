"""Moses tokenisation of the translation data, as in the reversible-RNN paper, and its on-disk cache.

Preprocessing follows the reversible-RNN paper: the Moses tokenizer (``sacremoses``) with aggressive
dash splitting and no HTML escaping, then lower-casing. Aggressive dash splitting turns
``well-known`` into ``well @-@ known``; the ``@-@`` tokens stay in the vocabulary and in BLEU
(as in the paper's tokenised BLEU) and :func:`detokenize` glues them back (``well-known``).

Tokenising the 29,000 training pairs takes a few seconds, so tokenised files are cached as pickles
in ``cache_dir`` (default ``$REVBENCH_CACHE``, else ``$XDG_CACHE_HOME/revbench``, else
``~/.cache/revbench``), keyed by the file's SHA-256, the language and the tokenizer settings and
version. The shared data folder is never written to. Delete the cache folder to rebuild it;
``use_cache=False`` bypasses it.
"""
from __future__ import annotations

import hashlib
import os
import pickle
from functools import lru_cache
from pathlib import Path
from typing import Sequence

from revbench.tasks.datasets import DataError, MissingDataError, sha256_file
from revbench.util.atomic import atomic_write

DASH_TOKEN = "@-@"

# bump when tokenisation changes, so old cache entries are not reused
_TOKENIZER_SETTINGS = "moses;aggressive_dash_splits=True;escape=False;lower={lower};v1"


def _sacremoses():
    try:
        import sacremoses
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
        raise ModuleNotFoundError(
            "Multi30K tokenisation needs sacremoses: pip install 'revbench[nmt]' (or pip install sacremoses)"
        ) from exc
    return sacremoses


@lru_cache(maxsize=None)
def _tokenizer(lang: str):
    return _sacremoses().MosesTokenizer(lang=lang)


@lru_cache(maxsize=None)
def _detokenizer(lang: str):
    return _sacremoses().MosesDetokenizer(lang=lang)


def tokenize(sentence: str, lang: str, lower: bool = True) -> list[str]:
    """Moses-tokenise one sentence (aggressive dash splits, no escaping), then lower-case it."""
    tokens = _tokenizer(lang).tokenize(sentence.strip(), aggressive_dash_splits=True, escape=False)
    return [t.lower() for t in tokens] if lower else tokens


def detokenize(tokens: Sequence[str], lang: str) -> str:
    """Inverse of :func:`tokenize` up to case: glue ``a @-@ b`` back to ``a-b``, then Moses-detokenise.

    Gluing ``@-@`` here (instead of relying on the detokenizer) keeps the round trip independent of
    the sacremoses version. A ``@-@`` at either end of the sentence becomes a plain ``-``.
    """
    glued: list[str] = []
    join_next = False
    for tok in tokens:
        if tok == DASH_TOKEN:
            if glued:
                glued[-1] += "-"
            else:
                glued.append("-")
            join_next = True
            continue
        if join_next:
            glued[-1] += tok
            join_next = False
        else:
            glued.append(tok)
    return _detokenizer(lang).detokenize(glued)


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("REVBENCH_CACHE"):
        return Path(os.environ["REVBENCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "revbench"


def tokenize_file(
    path: str | os.PathLike,
    lang: str,
    lower: bool = True,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> list[list[str]]:
    """Tokenise every line of ``path``; cached on disk (see the module docstring).

    An unreadable or unwritable cache is ignored (the file is just tokenised again).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"data file {str(path)!r} is missing")
    settings = _TOKENIZER_SETTINGS.format(lower=lower)
    cache_file = None
    if use_cache:
        version = getattr(_sacremoses(), "__version__", "unknown")
        key = hashlib.sha256(f"{sha256_file(path)}|{lang}|{settings}|sacremoses={version}".encode()).hexdigest()[:24]
        cache_file = _cache_root(cache_dir) / "tokenized" / f"{path.name}.{key}.pkl"
        try:
            with open(cache_file, "rb") as fh:
                cached = pickle.load(fh)
            if isinstance(cached, list):
                return cached
        except Exception:       # a damaged cache entry of any kind is just rebuilt  # noqa: BLE001
            pass
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().split("\n")
    except UnicodeDecodeError as exc:
        raise DataError(f"data file {str(path)!r} is not UTF-8 text ({exc.reason}): is it corrupt, or not a "
                        "corpus file?") from None
    except OSError as exc:
        raise DataError(f"data file {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    if lines and lines[-1] == "":
        lines.pop()
    tokens = [tokenize(line, lang, lower) for line in lines]
    if cache_file is not None:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(cache_file, lambda fh: pickle.dump(tokens, fh, protocol=pickle.HIGHEST_PROTOCOL), binary=True)
        except OSError:
            pass
    return tokens
