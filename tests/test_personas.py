import numpy as np
import pytest

from pipeline.generate.personas import PersonaError, load_personas, top_k

from .conftest import SHARED_DATA


def test_team_collection():
    personas = load_personas()
    assert len(personas) >= 300
    assert len(set(personas)) == len(personas)
    assert sum("Chin" in p or "Beijing" in p or "Shanghai" in p for p in personas) >= 20


def test_txt_and_persona_hub_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("# comment\nA baker\n\nA pilot\nA baker\n")
    (tmp_path / "b.jsonl").write_text('{"persona": "A diver"}\n{"persona": "A pilot"}\n')
    assert load_personas(tmp_path) == ["A baker", "A pilot", "A diver"]
    (tmp_path / "c.jsonl").write_text('{"name": "no persona"}\n')
    with pytest.raises(PersonaError, match=r"c\.jsonl:1"):
        load_personas(tmp_path / "c.jsonl")


@pytest.mark.skipif(not (SHARED_DATA / "personas").exists(), reason="../shared/data not present")
def test_reads_shared_persona_hub_file():
    personas = load_personas(SHARED_DATA / "personas" / "personahub_tool_5k.jsonl")
    assert len(personas) > 4000


def test_top_k_matches_brute_force():
    rng = np.random.default_rng(0)
    passages = rng.normal(size=(7, 16)).astype(np.float32)
    personas = rng.normal(size=(50, 16)).astype(np.float32)
    passages /= np.linalg.norm(passages, axis=1, keepdims=True)
    personas /= np.linalg.norm(personas, axis=1, keepdims=True)
    got = top_k(passages, personas, 5)
    expected = np.argsort(-(passages @ personas.T), axis=1)[:, :5]
    assert (got == expected).all()
    assert top_k(passages, personas[:3], 5).shape == (7, 3)


def test_retrieval_with_real_embedder(minilm_path):
    from pipeline.embed.embedder import Embedder

    embedder = Embedder(minilm_path, "minilm")
    personas = [
        "A cardiologist treating heart disease",
        "A software engineer writing Python",
        "A wheat farmer",
    ]
    vectors = embedder.encode(personas)
    query = embedder.encode(
        ["The patient's arrhythmia was treated with a beta blocker after a heart attack."]
    )
    assert personas[top_k(query, vectors, 1)[0, 0]] == personas[0]
