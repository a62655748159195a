"""Nearest-passage search: exact below the size limit, the on-disk IVF index above it (mining
from it equals mining by exact search), HNSW with high recall; mining over a pool larger than
the old 2,000-passage cap."""

from dataclasses import replace

import numpy as np

from pipeline import schema as S
from pipeline.config import NegativesConfig
from pipeline.embed.index import VectorIndex
from pipeline.embed.pool import PassagePool
from pipeline.generate.negatives import MineNegatives


def clustered(count, dimension=64, clusters=40, seed=0):
    """Unit vectors around a few centres, as sentence embeddings of a corpus lie."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dimension))
    vectors = centres[rng.integers(0, clusters, count)] + 0.6 * rng.normal(size=(count, dimension))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def exact_top(vectors, queries, k):
    return np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :k]


def test_exact_search_is_exact():
    vectors, queries = clustered(3000), clustered(20, seed=1)
    index = VectorIndex(vectors)
    assert index.kind == "exact"
    scores, ids = index.search(queries, 50)
    assert (ids == exact_top(vectors, queries, 50)).all()
    assert np.allclose(scores, np.take_along_axis(queries @ vectors.T, ids, axis=1))


def test_hnsw_above_the_limit_finds_most_of_the_exact_neighbours():
    vectors, queries = clustered(3000), clustered(50, seed=1)
    index = VectorIndex(vectors, exact_max=1000)
    assert index.kind == "hnsw"
    _, ids = index.search(queries, 50)
    truth = exact_top(vectors, queries, 50)
    recall = np.mean([len(set(a) & set(b)) / 50 for a, b in zip(ids, truth, strict=True)])
    assert recall >= 0.95


class HashEmbedder:
    """Vectors looked up by text where the test plants them, otherwise seeded by the text."""

    name = "hash"

    def __init__(self, planted):
        self.planted = planted

    def encode(self, texts, show_progress=False, role="passage"):
        out = []
        for text in texts:
            if text in self.planted:
                out.append(self.planted[text])
            else:
                out.append(np.random.default_rng(abs(hash(text)) % 2**32).normal(size=16))
        out = np.asarray(out, dtype=np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_mining_reaches_past_the_old_pool_cap_and_skips_the_positives_document(tmp_path):
    direction = np.eye(16, dtype=np.float32)[3]
    texts = [f"passage {i}" for i in range(2600)]
    planted = {
        "the query": direction,
        "passage 2550": direction * 0.99 + 0.01,  # beyond the first 2,000: must be found
        "passage 2551": direction,  # the positive's own document: must be skipped
    }
    embedder = HashEmbedder(planted)
    pool = PassagePool.from_arrays(
        tmp_path / "pool",
        texts,
        [f"p{i}#0" for i in range(2600)],
        ["doc-of-positive" if i == 2551 else f"d{i}" for i in range(2600)],
        embedder.encode(texts),
    )
    row = {
        S.ID: "r",
        S.TASK_TYPE: "retrieval",
        S.QUERY: "the query",
        S.POSITIVE: "the positive",
        S.PASSAGE_ID: "doc-of-positive#1",
        S.SOURCE_ID: "doc-of-positive",
    }
    step = MineNegatives(embedder, pool, NegativesConfig(mined_count=3, rank_min=0, rank_max=5))
    result = step([row])
    mined = [c["text"] for c in result.kept[0][S.WORK_MINED_NEGATIVES]]
    assert mined[0] == "passage 2550" and "passage 2551" not in mined
    assert len(mined) == 5


class CountingEmbedder(HashEmbedder):
    identity = "hash-v1"
    dimension = 16

    def __init__(self):
        super().__init__({})
        self.encoded = 0

    def encode(self, texts, show_progress=False, role="passage"):
        self.encoded += len(texts)
        return super().encode(texts)


def test_pool_is_built_once_on_disk_and_rebuilt_when_a_passage_changes(tmp_path, monkeypatch):
    import pipeline.embed.pool as pool_module
    import pipeline.embed.pool_build as pool_build
    from pipeline.readers.passages import Passage

    monkeypatch.setattr(pool_module, "EXACT_MAX", 500)  # this pool is large enough to get the on-disk index
    monkeypatch.setattr(pool_build, "PART_ROWS", 256)  # five parts, encoded in turn by the one builder
    passages = [Passage(f"p{i}#0", f"d{i}", None, f"passage {i}", "en") for i in range(1200)]
    embedder = CountingEmbedder()
    first = PassagePool.build(lambda: iter(passages), embedder, tmp_path)
    assert embedder.encoded == 1200 and first.size == 1200
    assert first.index.kind == "ivf" and {"index.faiss", "lists.ivfdata"} <= {
        p.name for p in first.folder.iterdir()
    }
    # no training sample or shard is left in the pool; the index's settings are in its meta
    assert not list(first.folder.glob("*shard*")) and not (first.folder / "trained.faiss").exists()
    assert first.ivf.lists == 1200 // 40
    assert first.passages([0, 1199, -1]) == {
        0: ("p0#0", "d0", "passage 0"),
        1199: ("p1199#0", "d1199", "passage 1199"),
    }
    # memory-mapped float16 vectors, row for row the embedder's
    assert np.allclose(first.vectors[17], embedder.encode(["passage 17"])[0], atol=1e-3)

    again = PassagePool.build(lambda: iter(passages), embedder, tmp_path)
    assert embedder.encoded == 1201 and again.folder == first.folder  # nothing encoded but the check above
    _, ids = again.nearest(embedder.encode(["passage 5"]), 1)
    assert ids[0, 0] == 5

    passages[3] = Passage("p3#0", "d3", None, "passage three, edited", "en")
    changed = PassagePool.build(lambda: iter(passages), embedder, tmp_path)
    assert changed.folder != first.folder and embedder.encoded == 2402
    assert not list(tmp_path.glob(".*"))  # no unfinished build folder left behind
    assert not list(tmp_path.glob("*.build"))  # nor the parts it was assembled from


def test_mining_from_the_on_disk_index_equals_mining_by_exact_search(tmp_path, monkeypatch):
    """Same rank window and same skips: only where the vectors are searched changes. With enough
    candidates re-scored the mined negatives are exact search's; at the default settings nearly so."""
    import pipeline.embed.pool as pool_module

    vectors = clustered(4000, dimension=32, clusters=60)
    texts = [f"passage {i}" for i in range(4000)]
    # a query lies near its positive, as a generated question lies near its passage
    noise = np.random.default_rng(3).normal(size=(30, 32)).astype(np.float32)
    queries = vectors[::100][:30] + 0.3 * noise / np.sqrt(32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    planted = dict(zip(texts, vectors, strict=True))
    planted.update({f"query {j}": q for j, q in enumerate(queries)})
    planted.update({f"positive {j}": vectors[j * 100] for j in range(30)})
    embedder = HashEmbedder(planted)
    documents = [f"d{i // 2}" for i in range(4000)]  # two passages a document: the skip is exercised
    arrays = (texts, [f"p{i}" for i in range(4000)], documents, vectors)
    exact = PassagePool.from_arrays(tmp_path / "exact", *arrays)
    monkeypatch.setattr(pool_module, "EXACT_MAX", 1000)
    disk = PassagePool.from_arrays(tmp_path / "disk", *arrays)
    assert (exact.index.kind, disk.index.kind) == ("exact", "ivf")

    rows = [
        {
            S.ID: f"r{j}",
            S.TASK_TYPE: "retrieval",
            S.QUERY: f"query {j}",
            S.POSITIVE: f"positive {j}",
            S.PASSAGE_ID: f"p{j * 100}",
            S.SOURCE_ID: documents[j * 100],
        }
        for j in range(30)
    ]
    config = NegativesConfig(mined_count=4, rank_min=5, rank_max=40)

    def mined(pool):
        result = MineNegatives(embedder, pool, config)([dict(r) for r in rows])
        return [[c["text"] for c in r[S.WORK_MINED_NEGATIVES]] for r in result.kept]

    truth = mined(exact)
    assert all(len(m) == 35 for m in truth)  # ranks 5..40, the positive's document skipped
    defaults = mined(disk)
    for j, negatives in enumerate(defaults):  # never the positive's own document (passages 100j, 100j+1)
        assert not {f"passage {j * 100}", f"passage {j * 100 + 1}"} & set(negatives)
    found = sum(len(set(a) & set(b)) for a, b in zip(truth, defaults, strict=True))
    assert found / (30 * 35) >= 0.95
    monkeypatch.setattr(disk.index, "parameters", replace(disk.index.parameters, refine=16))
    assert mined(disk) == truth
