"""Readers that shard: N tasks over several files and one big one read every row once, and little more."""

import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import CorpusConfig, load_config
from pipeline.readers import JsonlReader, ParquetReader, open_corpus
from pipeline.readers.documents import CorpusError
from pipeline.readers.passages import limit_share, open_input, task_passages


def write_jsonl(path, first, count, filler=80):
    with path.open("w", encoding="utf-8") as handle:
        for i in range(first, first + count):
            # rows of uneven length, some with multi-byte text, so block ends fall mid-line
            text = f"passage {i} " + ("数据" if i % 3 == 0 else "word ") * (i % 17 + filler // 10)
            handle.write(json.dumps({"id": f"d{i}", "text": text}, ensure_ascii=False) + "\n")
            if i % 50 == 0:
                handle.write("\n")  # blank lines are skipped, not rows


@pytest.fixture(scope="module")
def corpus_folder(tmp_path_factory):
    """Five small JSONL files, one big one, a Parquet file of four row groups and three .txt files."""
    root = tmp_path_factory.mktemp("corpus")
    first = 0
    for k in range(5):
        write_jsonl(root / f"small-{k}.jsonl", first, 7)
        first += 7
    write_jsonl(root / "big.jsonl", first, 3000)
    first += 3000
    table = pa.table({"id": [f"d{i}" for i in range(first, first + 400)], "text": ["row text"] * 400})
    pq.write_table(table, root / "rows.parquet", row_group_size=100)
    first += 400
    for k in range(3):
        (root / f"note-{k}.txt").write_text(f"a plain text document number {k}", encoding="utf-8")
    (root / "README.md").write_text("not data: skipped")
    return root, first + 3


def ids_read(corpus, task, tasks, counts):
    return [row.get("id") for _, row in corpus.read(task, tasks, counts)]


@pytest.mark.parametrize("tasks", [1, 3, 8])
def test_tasks_read_every_row_exactly_once(corpus_folder, tasks):
    root, rows = corpus_folder
    config = CorpusConfig(path=str(root), block_bytes=16 * 1024)
    corpus = open_corpus([str(root)], config, tasks)
    seen = Counter()
    for task in range(tasks):
        seen.update(ids_read(corpus, task, tasks, Counter()))
    assert len(seen) == rows and set(seen.values()) == {1}
    # every task gets a piece of the big file, and the tasks are about equally large
    owned = [corpus.blocks_of(task, tasks) for task in range(tasks)]
    assert all(any(b.source.endswith("big.jsonl") for b in blocks) for blocks in owned)
    sizes = [sum(b.size for b in blocks) for blocks in owned]
    assert max(sizes) <= 1.5 * sum(sizes) / tasks


@pytest.mark.parametrize("tasks", [1, 4, 16])
def test_bytes_read_stay_near_the_corpus_size(corpus_folder, tasks):
    """JSONL and text: all tasks together read the corpus once, plus at most a line per block edge."""
    root, _ = corpus_folder
    sources = sorted(str(p) for p in root.iterdir() if p.suffix in {".jsonl", ".txt"})
    size = sum((root / p).stat().st_size for p in sources)
    corpus = open_corpus(sources, CorpusConfig(block_bytes=8 * 1024), tasks)
    counts = Counter()
    for task in range(tasks):
        ids_read(corpus, task, tasks, counts)
    edges = len(corpus.blocks)
    assert size <= counts["bytes_read"] <= size + edges * 4096 + edges * 300
    assert counts["bytes_read"] < 1.5 * size  # not tasks x size, as when every task read it all
    assert counts["blocks_read"] == edges


def test_a_small_file_is_cut_so_every_task_gets_work(tmp_path):
    path = tmp_path / "one.jsonl"
    write_jsonl(path, 0, 60)
    corpus = open_corpus([str(path)], CorpusConfig(), 6)
    assert len(corpus.blocks) >= 6
    assert all(list(corpus.read(t, 6)) for t in range(6))


def test_error_in_a_later_block_names_the_files_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    write_jsonl(path, 0, 500)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[420] = '{"id": "x", "text": "cut off\n'
    path.write_text("".join(lines), encoding="utf-8")
    reader = JsonlReader(str(path), block_bytes=4096)
    owner = next(b for b in reader.blocks() if b.start > 0 and _holds_line(path, b, 420))
    with pytest.raises(CorpusError, match=r"broken.jsonl:421: not valid JSON"):
        list(reader.rows(owner, Counter()))


def _holds_line(path, block, index):
    data = path.read_bytes()
    offset = sum(len(line) for line in data.splitlines(keepends=True)[:index])
    return block.start <= offset < block.end


def test_parquet_blocks_are_row_groups_with_file_row_numbers(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": [str(i) for i in range(10)], "text": ["x"] * 10}), path, row_group_size=4)
    reader = ParquetReader(str(path))
    assert len(reader.blocks()) == 3
    where, row = next(iter(reader.rows(reader.blocks()[2], Counter())))
    assert row["id"] == "8" and where.endswith("t.parquet:row 9")
    assert [r["id"] for _, r in reader.read(1, 2)] == ["4", "5", "6", "7"]


def test_saved_dataset_shards_read_each_row_once(tmp_path):
    import datasets

    folder = tmp_path / "saved"
    rows = {"id": [f"r{i}" for i in range(103)], "text": ["t"] * 103}
    datasets.Dataset.from_dict(rows).save_to_disk(folder)
    corpus = open_corpus([str(folder)], CorpusConfig(block_bytes=1024), 4)
    ids = [row["id"] for t in range(4) for _, row in corpus.read(t, 4)]
    assert sorted(ids) == sorted(f"r{i}" for i in range(103))
    where = [w for t in range(4) for w, row in corpus.read(t, 4) if row["id"] == "r57"][0]
    assert where.endswith(":row 58")


def test_limit_is_shared_by_the_tasks(tmp_path):
    config = load_config(None, ["limit=10", "output.num_tasks=3"])
    assert [limit_share(config, t) for t in range(3)] == [4, 3, 3]
    corpus = open_input(config)  # the packaged English sample
    from pipeline.readers.documents import ReadStats

    words = lambda text: len(text.split())  # noqa: E731 - a stand-in tokenizer
    got = [len(list(task_passages(config, corpus, t, words, ReadStats()))) for t in range(3)]
    assert got == [4, 3, 3]
    ids = [p.passage_id for t in range(3) for p in task_passages(config, corpus, t, words, ReadStats())]
    assert len(set(ids)) == 10


def _formats(root, rows):
    """The same rows as every delimited and compressed format the readers take."""
    import bz2
    import gzip
    import lzma

    import zstandard

    jsonl = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    tsv = "".join(f"{r['id']}\t{r['text']}\n" for r in rows).encode()
    files = {
        "collection.tsv": tsv,  # MS MARCO: id, text, no header
        "corpus.tsv": b"_id\ttext\ttitle\n" + tsv.replace(b"\n", b"\tT\n"),  # BEIR-style, with a header
        "c.csv": b"id,text\n" + "".join(f'{r["id"]},"{r["text"]}"\n' for r in rows).encode(),
        "c.jsonl.gz": gzip.compress(jsonl),
        "c.jsonl.bz2": bz2.compress(jsonl),
        "c.jsonl.xz": lzma.compress(jsonl),
        "c.jsonl.zst": zstandard.ZstdCompressor().compress(jsonl),
        "c.tsv.gz": gzip.compress(tsv),
        "a.json": json.dumps(rows, ensure_ascii=False, indent=1).encode(),
        "a.json.gz": gzip.compress(json.dumps(rows, ensure_ascii=False).encode()),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    return list(files)


def test_every_format_reads_each_row_once_over_tasks(tmp_path):
    from pipeline.readers.documents import ReadStats, documents

    rows = [{"id": f"d{i}", "text": f"passage {i} about tides, 潮汐 {'word ' * (i % 9)}"} for i in range(300)]
    for name in _formats(tmp_path, rows):
        config = CorpusConfig(block_bytes=2048)
        corpus = open_corpus([str(tmp_path / name)], config, num_tasks=3)
        found = []
        for task in range(3):
            found += [(d.id, d.text) for d in documents(corpus.read(task, 3), config, ReadStats())]
        assert sorted(found) == sorted((r["id"], r["text"]) for r in rows), name
        whole = name.endswith((".gz", ".bz2", ".xz", ".zst", ".csv", ".json"))
        assert (len(corpus.blocks) == 1) == whole, (name, len(corpus.blocks))  # plain TSV splits by bytes


def test_tsv_blocks_read_about_the_file_once(tmp_path):
    rows = [{"id": f"d{i}", "text": f"passage {i} " + "word " * (i % 13)} for i in range(20000)]
    path = tmp_path / "collection.tsv"
    path.write_text("".join(f"{r['id']}\t{r['text']}\n" for r in rows), encoding="utf-8")
    corpus = open_corpus([str(path)], CorpusConfig(block_bytes=65536), num_tasks=4)
    counts = Counter()
    ids = [row["id"] for task in range(4) for _, row in corpus.read(task, 4, counts)]
    assert sorted(ids) == sorted(r["id"] for r in rows)
    assert path.stat().st_size <= counts["bytes_read"] < 1.2 * path.stat().st_size


def test_compressed_rows_name_their_line(tmp_path):
    import gzip

    path = tmp_path / "c.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"id": "a", "text": "fine"}\n\n{"id": "b", "text": 3\n'))
    corpus = open_corpus([str(path)], CorpusConfig(), num_tasks=1)
    with pytest.raises(CorpusError, match=r"c\.jsonl\.gz:3: not valid JSON"):
        list(corpus.read(0, 1))
