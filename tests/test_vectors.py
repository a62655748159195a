"""The embedding store: computed once, reused across objects and runs, resumed after a crash."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.embed.embedder import Embedder
from pipeline.embed.store import EmbeddingStore


class Counting:
    """A deterministic stand-in model: a unit vector from the text's hash; counts what it encodes."""

    def __init__(self, fail_after: int | None = None):
        self.texts: list[str] = []
        self.fail_after = fail_after

    def __call__(self, texts):
        if self.fail_after is not None and len(self.texts) >= self.fail_after:
            raise RuntimeError("killed")
        self.texts += texts
        vectors = np.stack([np.random.default_rng(abs(hash(t)) % 2**32).normal(size=8) for t in texts])
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_a_second_encode_computes_nothing_and_reads_back_the_same(tmp_path):
    texts = [f"passage {i}" for i in range(50)] + ["passage 3"]  # a repeat is encoded once
    model = Counting()
    first = EmbeddingStore(tmp_path, "model-a", 8).encode(texts, "passage", model)
    assert len(model.texts) == 50
    again = Counting()
    second = EmbeddingStore(tmp_path, "model-a", 8).encode(texts, "passage", again)  # a new run
    assert again.texts == [] and np.allclose(first, second)
    assert np.allclose(first, model(texts), atol=2e-3)  # float16 on disk
    assert np.allclose(first[3], first[50])


def test_a_changed_text_role_or_embedder_misses(tmp_path):
    EmbeddingStore(tmp_path, "model-a", 8).encode(["a text"], "passage", Counting())
    for embedder, role, text in [("model-a", "passage", "a text!"), ("model-a", "query", "a text")]:
        model = Counting()
        EmbeddingStore(tmp_path, embedder, 8).encode([text], role, model)
        assert model.texts == [text]
    other = Counting()
    EmbeddingStore(tmp_path, "model-b", 8).encode(["a text"], "passage", other)
    assert other.texts == ["a text"]


def test_a_killed_encode_resumes_after_its_last_written_batch(tmp_path, monkeypatch):
    monkeypatch.setattr("pipeline.embed.store.BATCH", 10)
    texts = [f"t{i}" for i in range(35)]
    with pytest.raises(RuntimeError, match="killed"):
        EmbeddingStore(tmp_path, "m", 8).encode(texts, "passage", Counting(fail_after=20))
    resumed = Counting()
    vectors = EmbeddingStore(tmp_path, "m", 8).encode(texts, "passage", resumed)
    assert resumed.texts == texts[20:]  # the two finished batches were kept
    assert vectors.shape == (35, 8) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=2e-3)


def test_the_embedder_encodes_each_text_once_with_a_store(tmp_path, minilm_path):
    embedder = Embedder(minilm_path, "minilm", store_root=tmp_path)
    plain = Embedder(minilm_path, "minilm")
    texts = ["how do vaccines work", "Vaccines train the immune system."]
    first = embedder.encode(texts)
    assert embedder.store.computed == 2
    assert np.allclose(first, plain.encode(texts), atol=2e-3)
    embedder.encode(texts + ["a new text"])
    assert embedder.store.computed == 3


def test_a_store_made_in_one_thread_encodes_in_another(tmp_path):
    """A Ray replica builds its embedder in the constructor and runs tasks in a helper thread."""
    import threading

    store = EmbeddingStore(tmp_path, "m", 8)
    results = []
    worker = threading.Thread(target=lambda: results.append(store.encode(["x", "y"], "passage", Counting())))
    worker.start()
    worker.join(timeout=60)
    assert results and results[0].shape == (2, 8)


def test_a_retrained_embedder_in_the_same_folder_gets_new_vectors(tmp_path, minilm_path):
    """The store and the mining pool key on the model's files, not on its folder's name."""
    import os
    import shutil

    folder = tmp_path / "my-embedder"
    shutil.copytree(minilm_path, folder)
    store = tmp_path / "store"
    first = Embedder(str(folder), "mine", store_root=store)
    first.encode(["a text about rivers"])
    assert first.store.computed == 1
    assert Embedder(str(folder), "mine", store_root=store).identity == first.identity
    weights = next(p for p in folder.rglob("*.safetensors"))
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # "retrained" in place
    retrained = Embedder(str(folder), "mine", store_root=store)
    assert retrained.identity != first.identity
    retrained.encode(["a text about rivers"])
    assert retrained.store.computed == 1  # not the old model's vector


def prompted_copy(model: str, folder: Path, prompts: dict[str, str]) -> Path:
    """A copy of a sentence-transformers folder whose configuration names these prompts."""
    shutil.copytree(model, folder)
    config_file = folder / "config_sentence_transformers.json"
    config = json.loads(config_file.read_text())
    config["prompts"] = prompts
    config_file.write_text(json.dumps(config))
    return folder


def test_a_sentence_transformers_model_gets_its_query_prompt(tmp_path, minilm_path):
    """A model whose configuration names prompts (as Qwen3-Embedding's does) gets the query one on
    the query side and the document one on the passage side; the store keys vectors by prompt."""
    from sentence_transformers import SentenceTransformer

    query_prompt = "Instruct: find the passage on the topic\nQuery: "
    folder = prompted_copy(minilm_path, tmp_path / "prompted", {"query": query_prompt, "document": ""})
    texts = ["how do tides work", "the moon pulls the sea"]
    plain = Embedder(minilm_path, "plain")
    prompted = Embedder(str(folder), "prompted", store_root=tmp_path / "store")
    assert prompted.prompt("query") == "query" and prompted.prompt("passage") is None
    queries = prompted.encode(texts, role="query")
    passages = prompted.encode(texts, role="passage")
    assert not np.allclose(queries, passages, atol=1e-3)  # the prompt changes the query vectors
    np.testing.assert_allclose(passages, plain.encode(texts, role="passage"), atol=1e-3)  # float16 store
    model = SentenceTransformer(minilm_path)
    by_hand = model.encode(
        [query_prompt + t for t in texts], normalize_embeddings=True, convert_to_numpy=True
    )
    np.testing.assert_allclose(queries, by_hand, atol=1e-3)
    # read back from the store under the prompt's key, not the plain query's
    np.testing.assert_allclose(prompted.encode(texts, role="query"), queries, atol=1e-3)
    assert plain.prompt("query") is None  # MiniLM names no prompt: queries are encoded as they are


def test_synth_eval_gives_a_prompted_model_its_query_prompt(tmp_path, minilm_path):
    """The evaluation encoder reads the same configured prompts: queries get theirs unless an
    instruction replaces it, and the store keeps the prompted and plain query vectors apart."""
    import torch

    from pipeline.train.encoder import Encoder
    from pipeline.train.evaluate import StoredEncoder

    prompts = {"query": "search_query: ", "document": "search_document: "}
    folder = prompted_copy(minilm_path, tmp_path / "prompted", prompts)
    texts = ["how do tides work", "the moon pulls the sea"]
    encoder = Encoder(str(folder), device="cpu")
    plain = Encoder(minilm_path, device="cpu")
    assert encoder.prompt("query") == "search_query: " and encoder.prompt("passage") == "search_document: "
    queries = encoder.encode(texts, role="query")
    assert torch.allclose(queries, plain.encode(["search_query: " + t for t in texts]), atol=1e-5)
    assert not torch.allclose(queries, plain.encode(texts), atol=1e-3)
    instructed = encoder.encode(texts, instruction="Find the passage", role="query")
    assert torch.allclose(instructed, plain.encode(texts, instruction="Find the passage"), atol=1e-5)
    stored = StoredEncoder(encoder, "prompted", tmp_path / "store", batch_size=8)
    a = stored.encode(texts, "query", None, None, "queries")
    b = stored.encode(texts, "query", "Find the passage", None, "queries")
    assert stored.computed == 4 and not torch.allclose(a, b, atol=1e-3)
