"""The record schema: every column name and Arrow type of what the pipeline writes.

Steps pass rows around as plain dicts keyed by these names, so a column is
renamed here or nowhere. Internal working fields that never reach a shard start
with an underscore (see ``WORK_*``).
"""

from __future__ import annotations

import pyarrow as pa

# -- columns of the training rows in OUT/data/*.parquet -------------------------------
# What query / positive / negatives hold depends on the task type:
#   retrieval       query: written query; positive: the passage; negatives: look-alike passages
#   bitext          query: a sentence of the passage; positive: its translation;
#                   negatives: near-miss translations
#   classification  query: a text about the passage; positive: its label's description;
#                   negatives: a wrong label's description
#   sts             query: sentence 1; positive: sentence 2; no negatives; SCORE holds 1-5
#   code_search     query: a developer's question; positive: the code that answers it (a Python
#                   function without its docstring); negatives: plausible code doing something else
#   code_docs       query: a developer's question; positive: the doc section or docstring that
#                   answers it; negatives: look-alike documentation
#   code_translation query: a code unit; positive: the same logic in TARGET_PROGRAMMING_LANGUAGE;
#                   negatives: near-miss translations (a subtle bug, a wrong edge case)
#   domain          query: a query in DOMAIN; positive: the document the LLM wrote to answer it;
#                   negatives: look-alike documents it wrote beside it (no corpus involved)
ID = "id"
QUERY = "query"
POSITIVE = "positive"
NEGATIVES = "negatives"
TASK_TYPE = "task_type"
LANGUAGE = "language"  # language of the query
PASSAGE_LANGUAGE = "passage_language"  # language of the corpus passage the row was made from
TARGET_LANGUAGE = "target_language"  # bitext: language of the translation (positive and negatives)
LABEL = "label"  # classification: name of the correct label
SCORE = "score"  # sts: similarity of query and positive, 1 (unrelated) to 5 (same meaning)
PERSONA = "persona"
QUESTION_TYPE = "question_type"
DIFFICULTY = "difficulty"
QUERY_LENGTH_WORDS = "query_length_words"  # the length that was asked for, not measured
INSTRUCTION = "instruction"  # English task instruction for the embedding model's query side
SOURCE_ID = "source_id"  # id of the corpus document
PASSAGE_ID = "passage_id"  # id of the passage cut from that document
TITLE = "title"  # the document's title; for domain rows, the brainstormed topic
PROGRAMMING_LANGUAGE = "programming_language"  # code rows: language of the corpus code unit
TARGET_PROGRAMMING_LANGUAGE = "target_programming_language"  # code_translation: the positive's language
SYMBOL = "symbol"  # code rows: qualified name of the function, method or class
CODE_PATH = "path"  # code rows: the file inside the source tree (with the line: SOURCE_ID)
SIGNATURE = "signature"  # code rows: the unit's signature line
DOMAIN = "domain"  # domain rows: the domain asked for (legal, medical, ...)
NEGATIVE_SOURCES = "negative_sources"  # "llm" or "mined", one per negative
POSITIVE_SCORE = "positive_score"  # cos(query, positive) from the embedder
NEGATIVE_SCORES = "negative_scores"  # cos(query, negative), one per negative
POSITIVE_GAP = "positive_gap"  # cos(query, positive) minus the best other corpus passage's (positive check)
EASY = "easy"  # the positive is first over the corpus by more than filters.positive_check.easy_margin
JUDGE_SCORE = "judge_score"  # the LLM judge's 0-3 grade of the positive; null when the judge is off
MODEL = "model"  # generator that wrote the query
PROMPT_HASH = "prompt_hash"  # short hashes of every template used for the row

ROW_SCHEMA = pa.schema(
    [
        pa.field(ID, pa.string(), nullable=False),
        pa.field(QUERY, pa.string(), nullable=False),
        pa.field(POSITIVE, pa.string(), nullable=False),
        pa.field(NEGATIVES, pa.list_(pa.string()), nullable=False),
        pa.field(NEGATIVE_SOURCES, pa.list_(pa.string()), nullable=False),
        pa.field(TASK_TYPE, pa.string(), nullable=False),
        pa.field(LANGUAGE, pa.string(), nullable=False),
        pa.field(PASSAGE_LANGUAGE, pa.string(), nullable=False),
        pa.field(TARGET_LANGUAGE, pa.string()),
        pa.field(LABEL, pa.string()),
        pa.field(SCORE, pa.float32()),
        pa.field(PERSONA, pa.string()),
        pa.field(QUESTION_TYPE, pa.string()),
        pa.field(DIFFICULTY, pa.string()),
        pa.field(QUERY_LENGTH_WORDS, pa.int32()),
        pa.field(INSTRUCTION, pa.string()),
        pa.field(SOURCE_ID, pa.string(), nullable=False),
        pa.field(PASSAGE_ID, pa.string(), nullable=False),
        pa.field(TITLE, pa.string()),
        pa.field(PROGRAMMING_LANGUAGE, pa.string()),
        pa.field(TARGET_PROGRAMMING_LANGUAGE, pa.string()),
        pa.field(SYMBOL, pa.string()),
        pa.field(CODE_PATH, pa.string()),
        pa.field(SIGNATURE, pa.string()),
        pa.field(DOMAIN, pa.string()),
        pa.field(POSITIVE_SCORE, pa.float32()),
        pa.field(NEGATIVE_SCORES, pa.list_(pa.float32())),
        pa.field(POSITIVE_GAP, pa.float32()),
        pa.field(EASY, pa.bool_()),
        pa.field(JUDGE_SCORE, pa.int8()),
        pa.field(MODEL, pa.string(), nullable=False),
        pa.field(PROMPT_HASH, pa.string(), nullable=False),
    ]
)

# -- columns of dropped rows in OUT/rejected/*.parquet --------------------------------
STAGE = "stage"
REASON = "reason"
DETAIL = "detail"
RAW_OUTPUT = "raw_output"  # what the model wrote, verbatim, when a model output was at fault
SCORES = "scores"  # JSON object of the scores that decided the drop

REJECTED_SCHEMA = pa.schema(
    [
        pa.field(ID, pa.string()),
        pa.field(PASSAGE_ID, pa.string()),
        pa.field(TASK_TYPE, pa.string()),
        pa.field(LANGUAGE, pa.string()),
        pa.field(PASSAGE_LANGUAGE, pa.string()),
        pa.field(TARGET_LANGUAGE, pa.string()),
        pa.field(QUESTION_TYPE, pa.string()),
        pa.field(DIFFICULTY, pa.string()),
        pa.field(PERSONA, pa.string()),
        pa.field(STAGE, pa.string(), nullable=False),
        pa.field(REASON, pa.string(), nullable=False),
        pa.field(DETAIL, pa.string()),
        pa.field(RAW_OUTPUT, pa.string()),
        pa.field(QUERY, pa.string()),
        pa.field(POSITIVE, pa.string()),
        pa.field(NEGATIVES, pa.list_(pa.string())),  # as far as the row got: set by the margin step
        pa.field(NEGATIVE_SOURCES, pa.list_(pa.string())),
        pa.field(NEGATIVE_SCORES, pa.list_(pa.float32())),
        pa.field(SCORES, pa.string()),
    ]
)

# -- a person's review of sampled rows: OUT/review/labels-*.parquet (synth review) -----
# One file per saved decision (append-only; merged into one file when a review starts).
# The latest decision for a row wins; DECISION_ID makes a resent decision count once.
# Each decision carries what calibration needs (the row's gate outcome, stratum and scores),
# so ``synth calibrate`` reads the labels alone.
DECISION_ID = "decision_id"
ROW_ID = "row_id"
KEPT = "kept"  # the gate kept the row (False: dropped at STAGE for REASON)
VERDICT = "verdict"  # one of VERDICTS
FALSE_NEGATIVES = "false_negatives"  # indexes of the negatives the reviewer says answer the query
NOTE = "note"
REVIEWER = "reviewer"
TIME = "time"
STRATUM = "stratum"  # the sample's stratum of the row
STRATUM_ROWS = "stratum_rows"  # rows of the run in that stratum (the sampling weight's numerator)
VERDICTS = {
    "good": "good pair",
    "bad_query": "bad query",
    "not_answered": "positive does not answer it",
    "skip": "skip",
}

REVIEW_SCHEMA = pa.schema(
    [
        pa.field(DECISION_ID, pa.string(), nullable=False),
        pa.field(ROW_ID, pa.string(), nullable=False),
        pa.field(KEPT, pa.bool_(), nullable=False),
        pa.field(VERDICT, pa.string(), nullable=False),
        pa.field(FALSE_NEGATIVES, pa.list_(pa.int32()), nullable=False),
        pa.field(NOTE, pa.string()),
        pa.field(REVIEWER, pa.string(), nullable=False),
        pa.field(TIME, pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field(STRATUM, pa.string(), nullable=False),
        pa.field(STRATUM_ROWS, pa.int64(), nullable=False),
        pa.field(TASK_TYPE, pa.string()),
        pa.field(STAGE, pa.string()),
        pa.field(REASON, pa.string()),
        pa.field(POSITIVE_SCORE, pa.float32()),
        pa.field(JUDGE_SCORE, pa.float32()),
        pa.field(NEGATIVE_SCORES, pa.list_(pa.float32())),
        pa.field(NEGATIVE_SOURCES, pa.list_(pa.string())),
        pa.field(SCORES, pa.string()),
    ]
)

# -- working fields: carried between steps, never written to data shards -------------
WORK_CANDIDATES = "_persona_candidates"  # top-k persona texts for the passage
WORK_PROMPTS = "_prompt_hashes"  # template name -> short hash, joined into PROMPT_HASH
WORK_LLM_NEGATIVES = "_llm_negatives"  # candidates written by the LLM, before any check
WORK_MINED_NEGATIVES = "_mined_negatives"  # candidates mined from the corpus, nearest first
WORK_MODEL_NEGATIVES = "_model_negatives"  # candidates a trained model ranks above the positive
WORK_RELEVANT = "_relevant"  # corpus passages the judge graded as answers too: never negatives
WORK_GRADES = "_grades"  # passage text -> the judge's reply, for what the positive check asked already
WORK_REQUESTED_SCORE = "_requested_score"  # sts: the similarity the pair was asked to have
WORK_SCORES = "_scores"  # score name -> value: for histograms, output columns and rejected rows
WORK_TOKENS = "_tokens"  # LLM tokens (prompt + output) spent on the row so far
WORK_POSITION = "_position"  # the row's place in its chunk: a streamed chunk's slices are put back in order
WORK_CODE = "_code"  # code rows: the unit as written, docstring included (what the LLM reads)
WORK_PAIR = "_pair"  # --pairs rows: where the pair was read (file:line), for messages
WORK_DOCSTRING = "_docstring"  # code rows: the unit's docstring, which a query must not just paste


def positive_language(row: dict) -> str:
    """Language of the ``positive`` column: the translation's for bitext, the query's for STS."""
    task = row.get(TASK_TYPE)
    if task == "bitext":
        return row[TARGET_LANGUAGE]
    if task == "sts":
        return row[LANGUAGE]
    return row[PASSAGE_LANGUAGE]


def language_pair(row: dict) -> str:
    """``from->to`` of a row: passage to query, or for bitext source to translation."""
    if row.get(TASK_TYPE) == "bitext":
        return f"{row.get(LANGUAGE)}->{row.get(TARGET_LANGUAGE)}"
    return f"{row.get(PASSAGE_LANGUAGE)}->{row.get(LANGUAGE)}"


def project_row(row: dict) -> dict:
    """Keep only the columns of ``ROW_SCHEMA`` (filling absent optional ones with None)."""
    return {name: row.get(name) for name in ROW_SCHEMA.names}
