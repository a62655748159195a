"""What `synth generate` shows on the terminal, and where everything else goes.

The terminal gets the models used, this package's warnings, one progress bar with the rows
kept so far, and a short summary. Every log record (this package's, vLLM's, transformers',
Ray's), Python warnings, and what libraries print straight to the file descriptors while they
load models (C++ warnings, loading bars) go to ``OUT/logs/generate-<time>.log``. ``--verbose``
puts all of it back on the terminal as well.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

from .redaction import redact
from .run.folder import RunFolder

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_log_file: Path | None = None
_verbose = False
_handlers: list[logging.Handler] = []  # ours, replaced by the next start (tests start many runs)
_redirected_terminal = None  # the real terminal while file descriptors 1 and 2 go to the log file


class _Terminal:
    """Writes to the user's terminal, even while ``quiet()`` sends stderr to the log file."""

    encoding = "utf-8"  # tqdm draws its unicode bar only on a stream that says so

    def write(self, text: str) -> int:
        (_redirected_terminal or sys.stderr).write(redact(text))
        return len(text)

    def flush(self) -> None:
        (_redirected_terminal or sys.stderr).flush()

    def isatty(self) -> bool:
        stream = _redirected_terminal or sys.stderr
        return bool(getattr(stream, "isatty", lambda: False)())


terminal = _Terminal()  # for progress bars and messages meant for the user


class RedactingFormatter(logging.Formatter):
    """Every log line with its secrets masked (``pipeline/redaction.py``), tracebacks included."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def start_logging(out: Path, verbose: bool, command: str = "generate", logs: Path | None = None) -> Path:
    """Send every record to a new log file under ``out/logs`` (or ``logs``); the terminal keeps this
    package's warnings."""
    global _log_file, _verbose, _handlers
    # vLLM then leaves its records to the root logger's handlers instead of printing them itself
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    # a log file on a full disk must not print a traceback per record: the run says why it stopped
    logging.raiseExceptions = False
    logs = logs or RunFolder(out).logs_folder
    logs.mkdir(parents=True, exist_ok=True)
    path = logs / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}.log"
    root = logging.getLogger()
    for handler in _handlers:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setFormatter(RedactingFormatter(FORMAT, datefmt="%H:%M:%S"))
    root.addHandler(to_file)
    to_terminal = logging.StreamHandler(terminal)
    if verbose:
        to_terminal.setFormatter(RedactingFormatter(FORMAT, datefmt="%H:%M:%S"))
    else:
        to_terminal.setLevel(logging.WARNING)
        to_terminal.addFilter(lambda record: record.name.split(".")[0] == "pipeline")
        to_terminal.setFormatter(RedactingFormatter("%(levelname)s: %(message)s"))
    root.addHandler(to_terminal)
    _handlers = [to_file, to_terminal]
    logging.captureWarnings(True)  # library FutureWarnings and the like: to the file
    for name in ("transformers", "sentence_transformers", "huggingface_hub", "datasets", "vllm"):
        library = logging.getLogger(name)
        library.setLevel(logging.DEBUG if verbose else logging.INFO)
        # a library's own terminal handler would print past the log file (transformers adds one)
        for handler in list(library.handlers):
            library.removeHandler(handler)
        library.propagate = True
    _log_file, _verbose = path, verbose
    return path


def stop_logging() -> None:
    """Close the log file (before its folder goes: ``synth plan``'s scratch folder)."""
    global _log_file, _handlers
    root = logging.getLogger()
    for handler in _handlers:
        root.removeHandler(handler)
        handler.close()
    _handlers, _log_file = [], None


def log_file() -> Path | None:
    return _log_file


def crash_report(exc: BaseException) -> Path:
    """Write an unexpected error's traceback to the run's log file (or a new one in the cache's
    ``logs/``) and return that file's path: the terminal gets one line, the file the details."""
    import shlex
    import traceback

    text = redact("".join(traceback.format_exception(exc)))
    path = _log_file
    if path is None:
        from .models import cache_root

        folder = cache_root() / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    with path.open("a", encoding="utf-8") as sink:
        sink.write(f"{time.strftime('%H:%M:%S')} ERROR unexpected: {redact(shlex.join(sys.argv))}\n{text}")
    return path


def quiet():
    """Meanwhile, what libraries write to stdout/stderr (C++ logs included) goes to the log file;
    ``terminal`` still reaches the user."""
    if _log_file is None or _verbose or _redirected_terminal is not None:
        return nullcontext()
    return _redirected(_log_file)


@contextmanager
def _redirected(path: Path):
    global _redirected_terminal
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    _redirected_terminal = os.fdopen(os.dup(saved[1]), "w", buffering=1, encoding="utf-8")
    with path.open("ab") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            _redirected_terminal.close()
            _redirected_terminal = None


def say(message: str) -> None:
    """A line for the terminal (and the log file)."""
    logging.getLogger("pipeline.console").debug(message)
    print(message, file=terminal, flush=True)


def summary(result, log_path: Path | None) -> list[str]:
    """The closing lines of a run: counts, top drop reasons, cost, time, files, next commands."""
    stats = result.stats
    out = result.out_dir
    rows_in, kept = stats.rows_in, stats.rows_out
    share = f" ({100 * kept / rows_in:.0f}%)" if rows_in else ""
    lines = [f"rows: {rows_in} generated, {kept} kept{share}"]
    report = stats.to_json()
    dropped = sorted(report.get("dropped", {}).items(), key=lambda kv: -kv[1])
    if dropped:
        top = ", ".join(f"{reason} {count}" for reason, count in dropped[:5])
        more = f" (+{len(dropped) - 5} more reasons)" if len(dropped) > 5 else ""
        lines.append(f"dropped: {top}{more}")
    unread = {
        k[len("skipped_files_") :]: v
        for k, v in report.get("reading", {}).items()
        if k.startswith("skipped_files_")
    }
    if unread:
        kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(unread.items()))
        lines.append(f"not read: {kinds} file(s) in the corpus folder (not a corpus format)")
    tokens = report.get("tokens", {})
    if tokens.get("total_tokens"):
        per_pair = tokens.get("tokens_per_kept_pair")
        per = f", {per_pair:,.0f} per kept pair" if per_pair else ""
        lines.append(f"tokens: {tokens['total_tokens']:,} ({tokens.get('cached_share', 0):.0%} cached){per}")
    if tokens.get("reply_cache_hits"):
        saved = tokens["reply_cache_prompt_tokens"] + tokens["reply_cache_output_tokens"]
        lines.append(
            f"reply cache: {tokens['reply_cache_hits']:,} replies served, {saved:,} tokens not recomputed"
        )
    if getattr(result, "budget_stop", None):
        lines.insert(0, f"stopped by the budget: {result.budget_stop}")
    if getattr(result, "batch_waiting", None):
        lines.insert(0, f"waiting for a batch runner: {result.batch_waiting}")
    t = stats.timings
    lines.append(
        f"time: {t.get('total', 0):.1f} s (engine start {t.get('engine_start', 0):.1f} s, "
        f"generation {t.get('generation', 0):.1f} s)"
    )
    folder = RunFolder(out)
    shards = len(result.shards)
    lines.append(f"data: {folder.data_folder} ({shards} shards); dropped rows: {folder.rejected_folder}")
    if folder.card_file.exists():
        lines.append(f"card: {folder.card_file}; stats: {folder.stats_file}")
    if log_path is not None:
        lines.append(f"logs: {log_path}")
    lines.append(f"next: synth stats {out}    (the whole funnel)")
    lines.append(f"      synth report {out}    synth export {out}")
    lines.append(f"      synth publish {out} --repo-id NAME")
    return lines
