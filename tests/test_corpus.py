import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import CorpusConfig
from pipeline.readers.documents import CorpusError, ReadStats, iter_documents, sample_corpus_path
from pipeline.readers.passages import iter_passages, split_passages


def words(text: str) -> int:
    return len(text.split())


def chars(text: str) -> int:
    return len(text)


def read(path, **kw):
    stats = ReadStats()
    docs = list(iter_documents(CorpusConfig(path=str(path), **kw), sample_corpus_path("en"), stats))
    return docs, stats


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")


def test_beir_field_names_and_empty_rows(tmp_path):
    path = tmp_path / "c.jsonl"
    write_jsonl(
        path,
        [
            {"_id": "a", "title": "T", "text": "Alpha text."},
            {"_id": "b", "title": "", "text": "   "},
            {"_id": "c", "content": "Gamma text."},
        ],
    )
    docs, stats = read(path)
    assert [d.id for d in docs] == ["a", "c"]
    assert docs[0].title == "T" and docs[1].text == "Gamma text."
    assert stats.counts["skipped_empty_document"] == 1 and stats.counts["documents_read"] == 3


def test_named_fields(tmp_path):
    path = tmp_path / "c.jsonl"
    write_jsonl(path, [{"key": 1, "body_text": "Some words here.", "lang": "en"}])
    docs, _ = read(path, id_field="key", text_field="body_text")
    assert docs[0].id == "1" and docs[0].language == "en"


def test_malformed_json_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "1", "text": "ok"}\n{"id": "2", "text": \n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"bad\.jsonl:2: not valid JSON"):
        read(path)


def test_missing_field_is_named(tmp_path):
    path = tmp_path / "c.jsonl"
    write_jsonl(path, [{"id": "1", "text": "fine"}, {"id": "2", "note": "no text key"}])
    with pytest.raises(CorpusError, match=r"c\.jsonl:2: missing text field"):
        read(path)
    write_jsonl(path, [{"text": "no id"}])
    with pytest.raises(CorpusError, match=r"c\.jsonl:1: missing id field"):
        read(path)
    write_jsonl(path, [{"id": "x", "text": 5}])
    with pytest.raises(CorpusError, match="must be a string"):
        read(path)


def test_broken_utf8_names_the_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"id": "1", "text": "fine"}\n{"id": "2", "text": "caf\xe9"}\n')
    with pytest.raises(CorpusError, match=r"c\.jsonl:2: not valid UTF-8"):
        read(path)


def test_parquet_and_text_folder_and_saved_dataset(tmp_path):
    table = pa.table({"id": ["p1", "p2"], "text": ["Parquet one.", "Parquet two."]})
    pq.write_table(table, tmp_path / "c.parquet")
    docs, _ = read(tmp_path / "c.parquet")
    assert [d.text for d in docs] == ["Parquet one.", "Parquet two."]

    folder = tmp_path / "txt"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("First file.", encoding="utf-8")
    (folder / "sub" / "b.txt").write_text("Second file.", encoding="utf-8")
    docs, _ = read(folder)
    assert [d.id for d in docs] == ["a.txt", "sub/b.txt"]

    import datasets

    datasets.Dataset.from_dict({"id": ["h1"], "text": ["From a saved dataset."]}).save_to_disk(
        tmp_path / "hf"
    )
    docs, _ = read(tmp_path / "hf")
    assert docs[0].id == "h1"


def test_missing_path(tmp_path):
    with pytest.raises(CorpusError, match="no such file"):
        read(tmp_path / "absent.jsonl")


def test_long_document_is_split_under_budget():
    text = " ".join(f"Sentence number {i} has several words in it." for i in range(40))
    passages = split_passages(text, words, 30)
    assert len(passages) > 5
    assert all(words(p) <= 30 for p in passages)
    assert " ".join(passages).split() == text.split()  # nothing lost, nothing repeated


def test_chinese_sentences_split_without_spaces():
    text = "第一句话很短。第二句话也很短！第三句话呢？" * 5
    passages = split_passages(text, chars, 25)
    assert all(len(p) <= 25 for p in passages)
    assert "".join(passages) == text


def test_single_oversized_sentence_is_cut():
    text = "word " * 100
    assert all(words(p) <= 16 for p in split_passages(text, words, 16))


def test_huge_document_truncated_and_language_detected(tmp_path):
    path = tmp_path / "c.jsonl"
    write_jsonl(
        path,
        [
            {"id": "big", "text": "Dogs are loyal animals. " * 100},
            {"id": "zh", "text": "今天天气很好，我们一起去公园散步吧。公园里有很多人。"},
            {"id": "tiny", "text": "Hi."},
        ],
    )
    config = CorpusConfig(path=str(path), max_document_chars=1000, max_passage_tokens=50)
    stats = ReadStats()
    passages = list(iter_passages(iter_documents(config, path, stats), words, config, stats))
    assert stats.counts["truncated_huge_document"] == 1
    assert stats.counts["skipped_short_passage"] == 1
    big = [p for p in passages if p.source_id == "big"]
    assert sum(len(p.text) for p in big) <= 1000 and len(big) > 1
    assert {p.passage_id for p in big} == {f"big#{i}" for i in range(len(big))}
    assert [p.language for p in passages if p.source_id == "zh"] == ["zh"]
    assert all(p.language == "en" for p in big)


def test_sample_corpus_is_varied():
    for language in ("en", "zh"):
        rows = [
            json.loads(line) for line in sample_corpus_path(language).read_text(encoding="utf-8").splitlines()
        ]
        assert len(rows) >= 40
        assert {r["language"] for r in rows} == {language}
        assert {"science", "law", "health", "code", "daily", "history", "finance"} <= {
            r["domain"] for r in rows
        }
