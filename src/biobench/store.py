"""SQLite results store: one row per experiment, one per test prediction, and run claims.

Only the launcher process writes. Each experiment (its row and all its predictions) is
written in one transaction, so an interrupted run leaves either the whole experiment or
nothing; a rerun skips every `ExperimentKey` already present. Claims in `runs` let two
launchers share a database without doing the same experiment twice; a claim whose
process is gone (or, on another host, whose heartbeat is older than `STALE_CLAIM_S`) is
ignored.

Multimodal-LLM runs add `mllm_answers`: every answer received, keyed by a hash of the
model and the full request, written the moment it arrives (its own small transaction),
so an interrupted or over-budget run resumes without paying for an answer twice.
Experiments gain `prompting`, `cost_usd`, `n_failed` and `parse_rate` (NULL for probe
runs). Schema 1 databases are upgraded in place when opened.

Beside its prediction rows, each experiment keeps `prediction_arrays`: the same scores,
labels, predictions and groups as packed arrays (one row, written in the same
transaction), so the report reads a column of the leaderboard in one query without a
Python object per prediction. It is a copy, never the only record: an experiment without
one (a database written before it existed, opened here with the table added empty) is
read from its prediction rows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import socket
import sqlite3
import struct
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from biobench.errors import BiobenchError
from biobench.evaluation import TaskReport


class StoreError(BiobenchError):
    """The results database cannot be written (disk full, read-only, permissions): the run stops."""


class StoreConflict(BiobenchError):
    """An experiment key already stored with results of different weights."""


SCHEMA_VERSION = 2
STALE_CLAIM_S = 6 * 3600

SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    id INTEGER PRIMARY KEY,
    task TEXT NOT NULL,
    model_org TEXT NOT NULL,
    model_ckpt TEXT NOT NULL,
    method TEXT NOT NULL,
    n_train INTEGER NOT NULL,          -- requested, -1 = all
    n_train_actual INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    protocol TEXT NOT NULL,
    metric TEXT NOT NULL,
    score REAL NOT NULL,
    ci_low REAL,
    ci_high REAL,
    n_test INTEGER NOT NULL,
    sub_scores TEXT NOT NULL,          -- JSON
    config TEXT NOT NULL,              -- JSON
    argv TEXT NOT NULL,                -- JSON
    git_commit TEXT,
    package_versions TEXT NOT NULL,    -- JSON
    data_fingerprint TEXT,
    backbone_fingerprint TEXT,
    gpu TEXT,
    host TEXT NOT NULL,
    posix_time REAL NOT NULL,
    seconds_embed REAL,
    seconds_fit REAL,
    seconds_score REAL,
    prompting TEXT,                    -- mllm: single / multi (also in the protocol id)
    cost_usd REAL,                     -- mllm: what the answers cost
    n_failed INTEGER,                  -- mllm: examples whose request failed for good
    parse_rate REAL,                   -- mllm: share of answers naming a class clearly
    UNIQUE (task, model_org, model_ckpt, method, n_train, seed, protocol)
);
CREATE TABLE IF NOT EXISTS predictions (
    experiment_id INTEGER NOT NULL REFERENCES experiments(id) ON DELETE CASCADE,
    example_id TEXT NOT NULL,
    score REAL NOT NULL,
    info TEXT NOT NULL,                -- JSON
    PRIMARY KEY (experiment_id, example_id)
);
CREATE TABLE IF NOT EXISTS prediction_arrays (
    experiment_id INTEGER PRIMARY KEY REFERENCES experiments(id) ON DELETE CASCADE,
    n INTEGER NOT NULL,                -- predictions packed (all of the experiment's, in example-id order)
    ids_digest TEXT NOT NULL,          -- sha1 of the example ids in id order joined by \x1f
    scores BLOB NOT NULL,              -- per-example scores, float64 little-endian
    label BLOB,                        -- info's `label`, `pred`, `group`: see pack_values (NULL: absent everywhere)
    pred BLOB,
    grp BLOB
);
CREATE TABLE IF NOT EXISTS mllm_answers (
    key TEXT PRIMARY KEY,              -- sha256 of model route, settings and messages
    model TEXT NOT NULL,
    answer TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_usd REAL,
    posix_time REAL NOT NULL,
    top_logprobs TEXT                  -- JSON [[token, logprob], ...] of the first output token, when asked for
);
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,              -- JSON of the ExperimentKey being worked on
    run_id TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    claimed REAL NOT NULL,
    heartbeat REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    name TEXT PRIMARY KEY,             -- biobench.executors.Job.name (its outbox directory)
    job_id TEXT NOT NULL,              -- Slurm job id (ARRAY_TASK), or the local process id
    cluster TEXT NOT NULL,             -- slurm / local
    folder TEXT NOT NULL,              -- submitit folder: job scripts, logs, pickles
    keys TEXT NOT NULL,                -- JSON list of the ExperimentKeys it runs
    state TEXT NOT NULL,               -- queued / running / done / failed
    error TEXT,
    log_path TEXT,
    submitted REAL NOT NULL,
    updated REAL NOT NULL
);
"""

ADDED_COLUMNS = {"prompting": "TEXT", "cost_usd": "REAL", "n_failed": "INTEGER", "parse_rate": "REAL"}
"""Experiment columns added in schema 2 (added to schema-1 databases on open)."""


@dataclasses.dataclass(frozen=True, order=True)
class ExperimentKey:
    """What makes two experiments the same experiment; a rerun skips keys already stored."""

    task: str
    model_org: str
    model_ckpt: str
    method: str
    n_train: int
    seed: int
    protocol: str

    @property
    def model(self) -> str:
        return f"{self.model_org}:{self.model_ckpt}"

    def describe(self) -> str:
        n = "all" if self.n_train < 0 else str(self.n_train)
        return f"{self.task} | {self.model} ({self.method}) | n_train={n} | seed={self.seed}"

    def to_json(self) -> str:
        return json.dumps(dataclasses.astuple(self))


@dataclasses.dataclass(frozen=True)
class Report:
    """One finished experiment as the store writes it: the route's `TaskReport` plus the key and provenance.

    The task's numbers are read through to `result` (`report.score`, `report.example_ids`, ...).
    """

    key: ExperimentKey
    result: TaskReport
    """What the route measured."""
    config: dict
    provenance: dict
    """argv, git_commit, package_versions, gpu, host, posix_time."""
    data_fingerprint: str | None = None
    backbone_fingerprint: str | None = None
    seconds_embed: float | None = None
    prompting: str | None = None

    def __getattr__(self, name: str):
        if name in _RESULT_FIELDS:
            return getattr(self.result, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


_RESULT_FIELDS = frozenset({f.name for f in dataclasses.fields(TaskReport)} | {"n_test"})


class Store:
    """The results database at `path` (created with its schema if missing).

    With `readonly`, the file is only read (reports, dry runs): it must exist, and it may sit
    on a read-only disk or belong to someone else.
    """

    def __init__(self, path: Path | str, *, readonly: bool = False):
        self.path = Path(path)
        self.readonly = readonly
        if readonly:
            self._open_readonly()
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise BiobenchError(
                f"Cannot create the results directory {self.path.parent}: {err}. Set report_to to a writable directory."
            ) from None
        try:
            self.conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            self.conn.execute("PRAGMA foreign_keys = ON")
            self.conn.execute("PRAGMA synchronous = FULL")
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise BiobenchError(f"{self.path} was written by a newer biobench (schema {version} > {SCHEMA_VERSION}); upgrade biobench.")
            with self.transaction() as conn:
                for statement in SCHEMA.split(";\n"):
                    if statement.strip():
                        conn.execute(statement)
                # Inside the same transaction: two launchers opening a schema-1 file never both add a column.
                have = {row[1] for row in conn.execute("PRAGMA table_info(experiments)")}
                for column, sql_type in ADDED_COLUMNS.items():
                    if column not in have:
                        conn.execute(f"ALTER TABLE experiments ADD COLUMN {column} {sql_type}")
                if "top_logprobs" not in {row[1] for row in conn.execute("PRAGMA table_info(mllm_answers)")}:
                    conn.execute("ALTER TABLE mllm_answers ADD COLUMN top_logprobs TEXT")  # added after schema 2, nullable
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as err:
            raise BiobenchError(f"{self.path} is not a usable biobench results database: {err}") from err

    def _open_readonly(self) -> None:
        if not self.path.is_file():
            raise BiobenchError(f"No results database at {self.path}; run `biobench run CONFIG` first, or pass the right --db.")
        try:
            self.conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=60, isolation_level=None)
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {row[0] for row in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as err:
            raise BiobenchError(f"{self.path} is not a usable biobench results database: {err}") from err
        if version > SCHEMA_VERSION:
            raise BiobenchError(f"{self.path} was written by a newer biobench (schema {version} > {SCHEMA_VERSION}); upgrade biobench.")
        if "experiments" not in tables:
            raise BiobenchError(f"{self.path} is not a biobench results database (it has no experiments table).")
        have = {row[1] for row in self.conn.execute("PRAGMA table_info(experiments)")}
        self._missing_columns = [c for c in ADDED_COLUMNS if c not in have]  # a schema-1 file read as is

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception including KeyboardInterrupt.

        A database that cannot be written (disk full, read-only, no permission, locked too
        long) raises `StoreError`: one line naming the file and the fix."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as err:
            raise self._unwritable(err) from err
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException as err:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            if isinstance(err, sqlite3.OperationalError | sqlite3.DatabaseError) and not isinstance(err, sqlite3.IntegrityError):
                raise self._unwritable(err) from err
            raise

    def _unwritable(self, err: sqlite3.Error) -> StoreError:
        text = str(err).lower()
        if "full" in text:
            fix = f"free space on the disk holding {self.path.parent} (or set report_to to another disk)"
        elif "readonly" in text or "read-only" in text or "permission" in text:
            fix = f"make {self.path} and its directory writable (or set report_to to a writable directory)"
        elif "locked" in text or "busy" in text:
            fix = "another process held the database for over a minute; wait for it to finish"
        else:
            fix = "check the disk, or set report_to to another directory"
        return StoreError(f"Cannot write the results database {self.path}: {err}. To fix: {fix}, then rerun; stored results are kept.")

    # Experiments

    def done_keys(self) -> set[ExperimentKey]:
        rows = self.conn.execute("SELECT task, model_org, model_ckpt, method, n_train, seed, protocol FROM experiments").fetchall()
        return {ExperimentKey(*row) for row in rows}

    def has(self, key: ExperimentKey) -> bool:
        row = self.conn.execute(
            "SELECT 1 FROM experiments WHERE task=? AND model_org=? AND model_ckpt=? AND method=? AND n_train=? AND seed=? AND protocol=?",
            dataclasses.astuple(key),
        ).fetchone()
        return row is not None

    def write(self, record: Report) -> bool:
        """Store one experiment and its predictions in one transaction. False if the key was already stored."""
        k, r, p = record.key, record.result, record.provenance
        with self.transaction() as conn:
            if self.has(k):
                self._check_same_weights(k, record.backbone_fingerprint)
                return False
            cur = conn.execute(
                """INSERT INTO experiments (task, model_org, model_ckpt, method, n_train, n_train_actual, seed,
                protocol, metric, score, ci_low, ci_high, n_test, sub_scores, config, argv, git_commit,
                package_versions, data_fingerprint, backbone_fingerprint, gpu, host, posix_time,
                seconds_embed, seconds_fit, seconds_score, prompting, cost_usd, n_failed, parse_rate)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    k.task,
                    k.model_org,
                    k.model_ckpt,
                    k.method,
                    k.n_train,
                    r.n_train_actual,
                    k.seed,
                    k.protocol,
                    r.metric,
                    float(r.score),
                    _opt_float(r.ci_low),
                    _opt_float(r.ci_high),
                    r.n_test,
                    _json(r.sub_scores),
                    _json(record.config),
                    _json(p.get("argv", [])),
                    p.get("git_commit"),
                    _json(p.get("package_versions", {})),
                    record.data_fingerprint,
                    record.backbone_fingerprint,
                    p.get("gpu"),
                    p.get("host", socket.gethostname()),
                    p.get("posix_time", time.time()),
                    _opt_float(record.seconds_embed),
                    _opt_float(r.seconds_fit),
                    _opt_float(r.seconds_score),
                    record.prompting,
                    _opt_float(r.cost_usd),
                    None if r.n_failed is None else int(r.n_failed),
                    _opt_float(r.parse_rate),
                ),
            )
            exp_id = cur.lastrowid
            preds = [(str(i), float(s), _json(info)) for i, s, info in zip(r.example_ids, r.example_scores, r.example_info, strict=True)]
            conn.executemany(
                "INSERT INTO predictions (experiment_id, example_id, score, info) VALUES (?, ?, ?, ?)",
                ((exp_id, *p) for p in preds),
            )
            conn.execute(
                "INSERT OR REPLACE INTO prediction_arrays (experiment_id, n, ids_digest, scores, label, pred, grp) VALUES (?, ?, ?, ?, ?, ?, ?)",
                packed_row(exp_id, [p[0] for p in preds], [p[1] for p in preds], [p[2] for p in preds]),
            )
            conn.execute("DELETE FROM runs WHERE key = ?", (k.to_json(),))
        return True

    def _check_same_weights(self, key: ExperimentKey, fingerprint: str | None) -> None:
        """A stored experiment under `key` from other weights is a conflict, never a silent skip."""
        row = self.conn.execute(
            "SELECT backbone_fingerprint FROM experiments WHERE task=? AND model_org=? AND model_ckpt=? AND method=? "
            "AND n_train=? AND seed=? AND protocol=?",
            dataclasses.astuple(key),
        ).fetchone()
        if fingerprint and row and row[0] and row[0] != fingerprint:
            raise StoreConflict(
                f"{self.path} already holds {key.describe()} from a backbone with other weights "
                f"(fingerprint {row[0][:12]}, now {fingerprint[:12]}). Give this model its own checkpoint name "
                "(e.g. MyNet('v8')), or use another database."
            )

    def rows(self) -> list[dict]:
        """Every experiment as a dict of its columns (no predictions)."""
        cur = self.conn.execute("SELECT * FROM experiments ORDER BY task, model_org, model_ckpt, method, n_train, seed")
        names = [d[0] for d in cur.description]
        absent = dict.fromkeys(getattr(self, "_missing_columns", ()))
        return [{**absent, **dict(zip(names, row))} for row in cur.fetchall()]

    def predictions(self, experiment_id: int) -> list[tuple[str, float, dict]]:
        rows = self.conn.execute(
            "SELECT example_id, score, info FROM predictions WHERE experiment_id = ? ORDER BY rowid", (experiment_id,)
        ).fetchall()
        return [(e, s, json.loads(i)) for e, s, i in rows]

    # MLLM answers (the `biobench.mllm.client.AnswerCache` protocol; the store knows nothing of the client)

    def get_answer(self, key: str) -> dict | None:
        """A stored answer as {text, input_tokens, output_tokens, cost_usd} (+ top_logprobs when it has them), or None."""
        row = self.conn.execute(
            "SELECT answer, input_tokens, output_tokens, cost_usd, top_logprobs FROM mllm_answers WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        out = dict(zip(("text", "input_tokens", "output_tokens", "cost_usd"), row[:4]))
        if row[4] is not None:
            out["top_logprobs"] = tuple((str(t), float(lp)) for t, lp in json.loads(row[4]))
        return out

    def put_answer(self, key: str, model: str, answer) -> None:
        """Keep one answer at once (its own transaction): an interrupted run loses none it paid for."""
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO mllm_answers (key, model, answer, input_tokens, output_tokens, cost_usd, posix_time, "
                "top_logprobs) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    model,
                    answer.text or "",
                    answer.input_tokens,
                    answer.output_tokens,
                    _opt_float(answer.cost_usd),
                    time.time(),
                    None if getattr(answer, "top_logprobs", None) is None else json.dumps([list(p) for p in answer.top_logprobs]),
                ),  # fmt: skip
            )

    def n_answers(self) -> int:
        return self.conn.execute("SELECT COUNT(*) FROM mllm_answers").fetchone()[0]

    # Jobs of the pool and slurm executors (only the launcher writes these, as everything else)

    def put_job(self, name: str, job_id: str, cluster: str, folder: str, keys: Iterable[ExperimentKey], state: str = "queued") -> None:
        now = time.time()
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO jobs (name, job_id, cluster, folder, keys, state, error, log_path, submitted, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, ?, ?)",
                (name, job_id, cluster, folder, json.dumps([dataclasses.astuple(k) for k in keys]), state, now, now),
            )

    def set_job_state(self, name: str, state: str, error: str | None = None, log_path: str | None = None) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE jobs SET state = ?, error = COALESCE(?, error), log_path = COALESCE(?, log_path), updated = ? WHERE name = ?",
                (state, error, log_path, time.time(), name),
            )

    def jobs(self) -> list[dict]:
        """Every job submitted from this database, newest first (empty for a database from before jobs existed)."""
        if not self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs'").fetchone():
            return []
        cur = self.conn.execute("SELECT * FROM jobs ORDER BY submitted DESC, name")
        names = [d[0] for d in cur.description]
        out = []
        for row in cur.fetchall():
            d = dict(zip(names, row))
            d["keys"] = [ExperimentKey(*k) for k in json.loads(d["keys"])]
            out.append(d)
        return out

    # Claims

    def claim(self, keys: Iterable[ExperimentKey], run_id: str) -> tuple[list[ExperimentKey], list[ExperimentKey]]:
        """Claim keys for `run_id`. Returns (claimed, held_by_others); keys already stored are in neither."""
        host, pid, now = socket.gethostname(), os.getpid(), time.time()
        claimed, others = [], []
        with self.transaction() as conn:
            for key in keys:
                if self.has(key):
                    continue
                row = conn.execute("SELECT run_id, host, pid, heartbeat FROM runs WHERE key = ?", (key.to_json(),)).fetchone()
                if row is not None and row[0] != run_id and _claim_alive(row[1], row[2], row[3], now):
                    others.append(key)
                    continue
                conn.execute(
                    "INSERT OR REPLACE INTO runs (key, run_id, host, pid, claimed, heartbeat) VALUES (?, ?, ?, ?, ?, ?)",
                    (key.to_json(), run_id, host, pid, now, now),
                )
                claimed.append(key)
        return claimed, others

    def heartbeat(self, run_id: str) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE runs SET heartbeat = ? WHERE run_id = ?", (time.time(), run_id))

    def release(self, run_id: str) -> None:
        """Drop every claim of `run_id` (finished or interrupted)."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM runs WHERE run_id = ?", (run_id,))

    def claims(self) -> list[tuple[ExperimentKey, str, str, int]]:
        rows = self.conn.execute("SELECT key, run_id, host, pid FROM runs").fetchall()
        return [(ExperimentKey(*json.loads(k)), r, h, p) for k, r, h, p in rows]


PACKED_FIELDS = ("label", "pred", "group")
"""The prediction info fields `prediction_arrays` keeps (columns label, pred, grp)."""
_ARRAY = b"\x00BBA"
"""Starts a packed integer array (JSON text never starts with a NUL byte)."""


def ids_digest(joined_ids: str) -> str:
    """The digest of an experiment's example ids in id order, joined by \\x1f: equal digests, the same test examples."""
    return hashlib.sha1(joined_ids.encode()).hexdigest()


def pack_values(values: list) -> bytes | None:
    """One info field of every prediction as bytes: None where absent everywhere; an integer array
    (1-D, or 2-D for multi-hot lists of one length) as `_ARRAY`, its dtype, rows, columns and data;
    anything else (strings, None mixed in, floats) as JSON text of the list."""
    if all(v is None for v in values):
        return None
    flat = all(type(v) is int for v in values)
    rect = not flat and all(type(v) is list and all(type(x) is int for x in v) for v in values) and len({len(v) for v in values}) == 1
    if flat or rect:
        try:
            a = np.asarray(values, dtype=np.int64)
        except OverflowError:
            a = None
        if a is not None:
            lo, hi = (int(a.min()), int(a.max())) if a.size else (0, 0)
            dtype = next(d for d in (np.int8, np.int16, np.int32, np.int64) if np.iinfo(d).min <= lo and hi <= np.iinfo(d).max)
            a = a.astype(np.dtype(dtype).newbyteorder("<"))
            cols = a.shape[1] if a.ndim == 2 else 0
            return _ARRAY + a.dtype.str.encode() + struct.pack("<II", a.shape[0], cols) + a.tobytes()
    return json.dumps(values).encode()


def unpack_values(blob: bytes | None, n: int) -> np.ndarray | list:
    """`pack_values` undone: an int64 array, or the list (None everywhere for NULL)."""
    if blob is None:
        return [None] * n
    blob = bytes(blob)
    if blob.startswith(_ARRAY):
        dtype = np.dtype(blob[4:7].decode())
        rows, cols = struct.unpack("<II", blob[7:15])
        a = np.frombuffer(blob, dtype=dtype, offset=15).astype(np.int64)
        return a.reshape(rows, cols) if cols else a
    return json.loads(blob)


def packed_row(exp_id: int, example_ids: list[str], scores, info_texts: list[str]) -> tuple:
    """The `prediction_arrays` row of one experiment (its predictions' ids, scores and JSON infos), in example-id order.

    The fields are read back from the same JSON text the prediction rows store, so both say the same.
    Python orders strings by code point, which is the order of their UTF-8 bytes: SQLite's.
    """
    order = sorted(range(len(example_ids)), key=example_ids.__getitem__)
    infos = json.loads("[" + ",".join(info_texts[i] for i in order) + "]")
    fields = [pack_values([d.get(f) if isinstance(d, dict) else None for d in infos]) for f in PACKED_FIELDS]
    s = np.asarray(scores, dtype="<f8")[order] if len(order) else np.zeros(0, dtype="<f8")
    return (exp_id, len(order), ids_digest("\x1f".join(example_ids[i] for i in order)), s.tobytes(), *fields)


def _claim_alive(host: str, pid: int, heartbeat: float, now: float) -> bool:
    if host == socket.gethostname():
        return _pid_alive(pid)
    return now - heartbeat < STALE_CLAIM_S


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _opt_float(x) -> float | None:
    return None if x is None else float(x)


def _json(obj) -> str:
    return json.dumps(obj, default=_json_default, sort_keys=True)


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    raise TypeError(f"Cannot store {type(obj).__name__} as JSON.")
