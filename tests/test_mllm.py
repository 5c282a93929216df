"""Multimodal LLMs against a real OpenAI-compatible HTTP server (tests/mllm_server.py), not mocks."""

from __future__ import annotations

import json
import logging
import sqlite3

import numpy as np
import pytest

from biobench import cli, config, report, runner
from biobench.config import Model
from biobench.errors import BiobenchError, ConfigError
from biobench.evaluation import EvalContext
from biobench.mllm import prompts, registry
from biobench.mllm.client import Budget, Client, redact
from biobench.routes import mllm as mllm_route
from biobench.store import Store
from biobench.tasks import newt
from tests.conftest import run_cli

FAST = dict(max_rps=500.0, parallel=8, backoff_s=0.01, max_backoff_s=0.05, timeout_s=5.0)
TWO_TASKS = ("ml_tag_nest", "fgvcx_plant_pathology_healthy_vs_sick")


def local_model(server, **kw) -> Model:
    fields = dict(method="mllm", base_url=server.url, context_tokens=100_000, usd_per_m_input=1.0, usd_per_m_output=2.0, **FAST)
    fields.update(kw)
    return Model("local", "test-vlm", **fields)


def client_for(model: Model, **kw) -> Client:
    return Client(model, registry.resolve(model), **kw)


def run_newt(server, data, *, n_train=8, tasks=(), debug=False, **model_kw):
    model = local_model(server, **model_kw)
    with client_for(model) as client:
        examples = newt.read(newt.Options(data=data, tasks=tasks))
        result = mllm_route.evaluate(newt.SPEC, examples, client, EvalContext(n_train=n_train, seed=0, n_bootstrap=200, debug=debug))
        return result, client.stats


# Parsing


@pytest.mark.parametrize(
    "text, expected",
    [
        ("**merlin**", (1, True)),
        ("I think it is a **Merlin.**", (1, True)),  # bold anywhere, case and punctuation ignored
        ("Not **merlin** but **American kestrel**", (0, True)),  # the last bold phrase is the answer
        ("american kestrel", (0, True)),  # no bold, but exactly one class named
        ("It is an American kestrel, not a merlin.", (0, False)),  # names both: closest guess, parse failed
        ("**Answer:** merlin", (1, True)),  # a bold label that names no class is skipped
        ("**Merlins**", (1, True)),  # close enough
        ("", (None, False)),
        (None, (None, False)),
    ],
)
def test_parse_answer(text, expected):
    assert prompts.parse_answer(text, ("American kestrel", "merlin")) == expected


def test_a_bold_answer_naming_no_class_is_a_failed_parse():
    pred, parsed = prompts.parse_answer("**sparrow**", ("American kestrel", "merlin"))
    assert pred in (0, 1) and not parsed


def test_parse_prefers_the_longer_of_nested_names():
    names = ("bird", "bird with red eyes")
    assert prompts.parse_answer("a bird with red eyes", names) == (1, True)
    assert prompts.parse_answer("just a bird", names) == (0, True)


def test_secret_and_its_pieces_are_redacted():
    key = "sk-test-0123456789abcdef"
    text = f"Incorrect API key provided: {key}. Also sk-test-0123****cdef and ...56789abc..."
    out = redact(text, key)
    assert key not in out and "56789abc" not in out and "0123456789" not in out


# NeWT on the fixture


def test_newt_accuracy_and_parse_rate(mllm_server, newt_dir, newt_shuffled_dir):
    result, stats = run_newt(mllm_server, newt_dir, n_train=8)
    assert result.n_test == 140 and result.parse_rate == 1.0 and result.n_failed == 0
    # The server is a 1-NN on mean colour over the in-context examples: it learns the fixture's tints,
    # which it can only do if every example image is shown with its own class name.
    assert result.score > 0.65 and result.ci_low < result.score < result.ci_high
    for info, score in zip(result.example_info, result.example_scores):
        assert info["answer"] == f"This looks like **{info['pred_name']}**."
        assert score == float(info["pred_name"] == info["gold_name"])
    names = {(i["task"], i["label"]): i["gold_name"] for i in result.example_info}
    assert names[("ml_tag_nest", 1)] == "bird in its nest" and names[("ml_tag_nest", 0)] == "bird in the wild"
    # cost = tokens reported by the server x prices: 1000 in at $1/M + 10 out at $2/M per answer
    assert result.cost_usd == pytest.approx(140 * (1000 * 1.0 + 10 * 2.0) / 1e6)
    assert stats.requests == 140 and stats.retries == 0

    chance, _ = run_newt(mllm_server, newt_shuffled_dir, n_train=8)
    assert abs(chance.score - 0.5) < 0.15


def test_garbage_and_plain_answers_set_the_parse_rate(mllm_server, newt_dir):
    mllm_server.state.script = ["garbage"] * 7 + ["plain"] * 5
    result, _ = run_newt(mllm_server, newt_dir, n_train=4, tasks=TWO_TASKS)
    n = result.n_test
    assert n == 40 and len(mllm_server.state.by_mode("garbage")) == 7
    assert result.parse_rate == pytest.approx((n - 7) / n)
    assert sum(not i["parsed"] for i in result.example_info) == 7
    assert sum(i["answer"] == i["pred_name"] for i in result.example_info) == 5  # plain names parse


def test_debug_limits_test_examples(mllm_server, newt_dir):
    result, stats = run_newt(mllm_server, newt_dir, n_train=2, tasks=TWO_TASKS, debug=True)
    assert result.n_test == 20 and stats.requests == 20


# In-context examples


@pytest.mark.parametrize("prompting", ["single", "multi"])
def test_images_per_prompt_equal_n_train(mllm_server, newt_dir, prompting):
    result, _ = run_newt(mllm_server, newt_dir, n_train=6, tasks=TWO_TASKS, prompting=prompting)
    assert {r.n_images for r in mllm_server.state.records} == {7}  # 6 examples + the query
    assert {i["n_shots"] for i in result.example_info} == {6} and result.n_train_actual == 6


def test_in_context_examples_are_class_balanced_and_seeded(newt_dir):
    from biobench.mllm.evaluate import choose_shots

    groups, _ = mllm_route.groups(newt.SPEC, newt.read(newt.Options(data=newt_dir)))
    g = groups[0]
    a, b = choose_shots(g, 6, seed=0), choose_shots(g, 6, seed=0)
    assert np.array_equal(a, b) and not np.array_equal(a, choose_shots(g, 6, seed=1))
    labels = g.train_labels[a]
    assert (labels == 0).sum() == 3 and (labels == 1).sum() == 3
    for k in range(1, 7):  # every prefix is as balanced as it can be, so a context cap keeps balance
        assert abs(int((labels[:k] == 0).sum()) - int((labels[:k] == 1).sum())) <= 1


def test_context_window_caps_the_examples(mllm_server, newt_dir):
    # Each 48px fixture image costs ~255 tokens: a 2,000-token window holds the query and a few examples.
    result, _ = run_newt(mllm_server, newt_dir, n_train=16, tasks=TWO_TASKS, context_tokens=2000, max_output_tokens=64)
    records = mllm_server.state.records
    shots = [i["n_shots"] for i in result.example_info]
    assert 0 < max(shots) < 16
    assert sorted(r.n_images for r in records) == sorted(k + 1 for k in shots)
    # Check the cap against litellm's count of the full prompt (not the piecewise sum the code uses).
    from biobench.mllm.evaluate import choose_shots

    model = local_model(mllm_server, context_tokens=2000)
    groups, _ = mllm_route.groups(newt.SPEC, newt.read(newt.Options(data=newt_dir, tasks=TWO_TASKS)))
    g = next(g for g in groups if g.name == result.example_info[0]["task"])
    chosen = choose_shots(g, 16, 0)
    shot_list = [prompts.Shot(prompts.encode_image(g.train_paths[i]), g.classnames[g.train_labels[i]]) for i in chosen]
    k = result.example_info[0]["n_shots"]
    text = prompts.question(g.classnames, prompts.example_rng(0, f"{g.name}/{g.test_ids[0]}"))
    query = prompts.encode_image(g.test_paths[0])
    fits = prompts.count_tokens(prompts.messages(shot_list[:k], query, text, "single"), "openai/test-vlm")
    over = prompts.count_tokens(prompts.messages(shot_list[: k + 1], query, text, "single"), "openai/test-vlm")
    assert fits + model.max_output_tokens <= 2000 < over + model.max_output_tokens + prompts.TOKEN_MARGIN


# Retries, limits, failures


def test_retries_are_counted_and_succeed(mllm_server, newt_dir):
    mllm_server.state.script = ["429", "500", "malformed", "stall"]
    mllm_server.state.stall_s = 3.0  # well past the timeout, which is generous so a slow CI never times out a normal answer
    result, stats = run_newt(mllm_server, newt_dir, n_train=2, tasks=TWO_TASKS[:1], timeout_s=1.0)
    assert result.n_failed == 0 and result.n_test == 20
    assert stats.retries == 4 and stats.requests == 24 and len(mllm_server.state.records) == 24
    assert sum(i["attempts"] for i in result.example_info) == 24


def test_retries_are_bounded_and_failures_recorded(mllm_server):
    mllm_server.state.default = "500"
    model = local_model(mllm_server, max_retries=2)
    msgs = prompts.messages([], "data:,", "?", "single")
    with client_for(model) as client:
        answers = client.answer_all([msgs] * 3)
    assert len(mllm_server.state.records) == 9  # 3 examples x (1 + 2 retries), then give up
    assert all(a.text is None and a.attempts == 3 and "HTTP 500" in a.error for a in answers)
    assert client.stats.failed == 3


def test_non_retryable_error_fails_that_example_only(mllm_server, newt_dir):
    mllm_server.state.script = ["401", "401"]
    result, stats = run_newt(mllm_server, newt_dir, n_train=2, tasks=TWO_TASKS[:1])
    assert result.n_failed == 2 and stats.retries == 0 and len(mllm_server.state.records) == 20
    failed = [i for i in result.example_info if "error" in i]
    assert len(failed) == 2 and all("HTTP 401" in i["error"] and i["pred"] is None for i in failed)
    assert result.score == pytest.approx(np.mean([i["pred"] == i["label"] for i in result.example_info]))


def test_every_request_failing_fails_the_experiment(mllm_server, newt_dir):
    mllm_server.state.default = "401"
    with pytest.raises(BiobenchError, match="Every one of 20 requests failed"):
        run_newt(mllm_server, newt_dir, n_train=2, tasks=TWO_TASKS[:1])


def test_retry_after_is_honoured(mllm_server):
    mllm_server.state.script = ["429"]
    mllm_server.state.retry_after = "1"
    with client_for(local_model(mllm_server)) as client:
        (answer,) = client.answer_all([prompts.messages([], "data:,", "?", "single")])
    t = [r.t for r in mllm_server.state.records]
    assert answer.attempts == 2 and t[1] - t[0] >= 0.95  # backoff alone would be ~0.01 s


def test_requests_per_second_and_concurrency_limits_hold(mllm_server):
    mllm_server.state.latency_s = 0.15
    model = local_model(mllm_server, max_rps=20.0, parallel=3)
    with client_for(model) as client:
        client.answer_all([prompts.messages([], "data:,", f"q{i}", "single") for i in range(30)])
    t = np.sort([r.t for r in mllm_server.state.records])
    assert len(t) == 30
    # No 1-second window holds more than max_rps + 1 request starts (server clock).
    most = max(int(np.searchsorted(t, x + 1.0, side="left") - i) for i, x in enumerate(t))
    assert most <= 21
    assert t[-1] - t[0] >= 29 / 20 - 0.1
    assert mllm_server.state.max_in_flight <= 3


# Secrets


def test_api_key_never_reaches_store_logs_or_errors(mllm_server, newt_dir, config_file, tmp_path, monkeypatch, caplog):
    key = "sk-fake-SECRET-9f8e7d6c5b4a39281706"
    monkeypatch.setenv("BIOBENCH_TEST_KEY", key)
    mllm_server.state.script = ["401", "401", "500"]
    mllm_server.state.error_message = f"Incorrect API key provided: {key}. Get one at example.org"
    path = config_file(f"""
        n_train = 2
        n_bootstrap = 50
        [[models]]
        org = "local"
        ckpt = "test-vlm"
        method = "mllm"
        base_url = "{mllm_server.url}"
        api_key_env = "BIOBENCH_TEST_KEY"
        context_tokens = 100000
        max_rps = 500.0
        backoff_s = 0.01
        [data]
        newt = "{newt_dir}"
        [newt]
        tasks = ["ml_tag_nest"]
        """)
    with caplog.at_level(logging.DEBUG):
        summary = runner.run(config.load(path))
    assert summary.run == 1 and summary.answers_failed == 2
    assert all(r.auth == f"Bearer {key}" for r in mllm_server.state.records)  # the key was used...
    db = (tmp_path / "results" / "results.sqlite").read_bytes()
    pieces = [key[i : i + 8] for i in range(len(key) - 7)]
    for text in (db.decode("latin-1"), caplog.text, "\n".join(summary.errors)):
        assert not any(p in text for p in pieces)  # ...and no 8-character piece of it was kept anywhere
    with Store(tmp_path / "results" / "results.sqlite") as store:
        (row,) = store.rows()
        errors = [i["error"] for _, _, i in store.predictions(row["id"]) if "error" in i]
    assert len(errors) == 2 and all("[REDACTED]" in e for e in errors)

    monkeypatch.delenv("BIOBENCH_TEST_KEY")
    with pytest.raises(ConfigError, match="BIOBENCH_TEST_KEY") as err:
        runner.run(config.load(path), max_usd=1.0)
    assert key not in str(err.value)


# Budget and resume


def mllm_config(config_file, server, data, *, extra="", tasks=TWO_TASKS, name="mllm.toml", model_extra=""):
    tasks_toml = ", ".join(f'"{t}"' for t in tasks)
    return config_file(
        f"""
        n_train = 4
        n_bootstrap = 50
        device = "cpu"
        n_workers = 0
        {extra}
        [[models]]
        org = "local"
        ckpt = "test-vlm"
        method = "mllm"
        base_url = "{server.url}"
        context_tokens = 100000
        usd_per_m_input = 1.0
        usd_per_m_output = 2.0
        max_rps = 500.0
        parallel = 2
        {model_extra}
        [data]
        newt = "{data}"
        [newt]
        tasks = [{tasks_toml}]
        """,
        name=name,
    )


@pytest.mark.filterwarnings("ignore:coroutine .* was never awaited:RuntimeWarning")  # litellm calls cancelled at the stop
def test_budget_stops_cleanly_and_a_rerun_resumes_without_resending(mllm_server, newt_dir, config_file, tmp_path):
    cfg = config.load(mllm_config(config_file, mllm_server, newt_dir))
    per_answer = (1000 * 1.0 + 10 * 2.0) / 1e6
    first = runner.run(cfg, max_usd=15.5 * per_answer)  # about 16 of 40 answers
    db = tmp_path / "results" / "results.sqlite"
    with Store(db) as store:
        assert store.rows() == [] and store.claims() == []  # the partial experiment is not stored as done
        kept = store.n_answers()
    assert first.budget_stopped and first.run == 0 and 16 <= kept < 40
    assert first.spent_usd == pytest.approx(kept * per_answer)
    sent_first = len(mllm_server.state.records)

    second = runner.run(cfg)
    assert second.run == 1 and not second.budget_stopped
    resent = len(mllm_server.state.records) - sent_first
    assert resent == 40 - kept  # every answer received before the stop came from the store
    with Store(db) as store:
        (row,) = store.rows()
        infos = [i for _, _, i in store.predictions(row["id"])]
    assert row["n_test"] == 40 and sum(i["cached"] for i in infos) == kept
    assert row["cost_usd"] == pytest.approx(40 * per_answer)  # an experiment's cost counts cached answers too
    assert row["prompting"] == "single" and row["parse_rate"] == 1.0 and row["n_failed"] == 0
    assert row["protocol"].endswith("|mllm-single")

    third = runner.run(cfg)
    assert third.done == 1 and third.run == 0 and len(mllm_server.state.records) == sent_first + resent


def test_an_interrupted_run_resumes_without_resending(mllm_server, newt_dir, config_file, tmp_path, monkeypatch):
    from biobench.mllm import evaluate

    cfg = config.load(mllm_config(config_file, mllm_server, newt_dir))
    real = evaluate._classify_group
    calls = []

    def classify_then_interrupt(client, group, ctx):  # Ctrl-C once the first sub-task's answers are in
        calls.append(group.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(client, group, ctx)

    monkeypatch.setattr(evaluate, "_classify_group", classify_then_interrupt)
    first = runner.run(cfg)
    monkeypatch.setattr(evaluate, "_classify_group", real)
    assert first.interrupted and first.run == 0
    sent_first = len(mllm_server.state.records)
    with Store(tmp_path / "results" / "results.sqlite") as store:
        assert store.rows() == [] and store.n_answers() == 20 == sent_first and store.claims() == []
    second = runner.run(cfg)
    assert second.run == 1 and len(mllm_server.state.records) - sent_first == 20


def test_prompting_mode_is_part_of_the_experiment_key(mllm_server, newt_dir, config_file, tmp_path):
    single = config.load(mllm_config(config_file, mllm_server, newt_dir, tasks=TWO_TASKS[:1], name="s.toml"))
    multi = config.load(
        mllm_config(config_file, mllm_server, newt_dir, tasks=TWO_TASKS[:1], name="m.toml", model_extra='prompting = "multi"')
    )
    assert runner.run(single).run == 1 and runner.run(multi).run == 1
    rows = report.load(tmp_path / "results" / "results.sqlite")
    assert sorted(r["prompting"] for r in rows) == ["multi", "single"]
    table = report.to_table(rows)
    assert "mllm/single" in table and "mllm/multi" in table and "$/answer" in table


def test_missing_context_window_is_a_clear_config_error(config_file, newt_dir):
    path = config_file(f"""
        [[models]]
        org = "openrouter"
        ckpt = "some/unknown-model"
        method = "mllm"
        [data]
        newt = "{newt_dir}"
        """)
    with pytest.raises(ConfigError, match="context_tokens"):
        runner.run(config.load(path), dry_run=True)


def test_budget_needs_prices(mllm_server, newt_dir, config_file):
    path = config_file(f"""
        [[models]]
        org = "local"
        ckpt = "x"
        method = "mllm"
        base_url = "{mllm_server.url}"
        context_tokens = 4096
        [data]
        newt = "{newt_dir}"
        """)
    with pytest.raises(ConfigError, match="usd_per_m_input"):
        runner.run(config.load(path), max_usd=1.0)


def test_budget_check_raises_once_spent():
    from biobench.mllm.client import BudgetExhausted

    budget = Budget(0.01)
    budget.check()
    budget.spent_usd = 0.01
    with pytest.raises(BudgetExhausted, match="rerun"):
        budget.check()


# Config


@pytest.mark.parametrize(
    "line, match",
    [
        ("parallel = 0", "parallel must be at least 1"),
        ("max_rps = -1.0", "max_rps must be positive"),
        ('prompting = "few"', "prompting' must be one of 'single', 'multi'"),
        ('api_key_env = "sk-abc-123"', "NAME of an environment variable"),
        ('base_url = "localhost:8000"', "must start with http"),
        ("max_image_sid = 256", "did you mean 'max_image_side'"),
    ],
)
def test_mllm_config_errors_name_file_and_line(config_file, line, match):
    path = config_file(f'[[models]]\norg = "openai"\nckpt = "gpt-4o-mini"\nmethod = "mllm"\n{line}\n')
    with pytest.raises(ConfigError, match=match) as err:
        config.load(path)
    assert f"{path}:5" in str(err.value)
    assert "sk-abc-123" not in str(err.value)


def test_mllm_keys_on_a_probe_model_are_rejected(config_file):
    path = config_file('[[models]]\norg = "builtin"\nckpt = "pixel-stats"\nparallel = 4\n')
    with pytest.raises(ConfigError, match='only to method = "mllm"'):
        config.load(path)


# Store


def test_schema_1_database_opens_and_gains_the_new_columns(tmp_path):
    db = tmp_path / "old.sqlite"
    with Store(db):
        pass
    conn = sqlite3.connect(db)  # make it look like a schema-1 file written before this issue
    for column in ("prompting", "cost_usd", "n_failed", "parse_rate"):
        conn.execute(f"ALTER TABLE experiments DROP COLUMN {column}")
    conn.execute("DROP TABLE mllm_answers")
    conn.execute(
        "INSERT INTO experiments (task, model_org, model_ckpt, method, n_train, n_train_actual, seed, protocol, metric, "
        "score, n_test, sub_scores, config, argv, package_versions, host, posix_time) "
        "VALUES ('newt', 'builtin', 'pixel-stats', 'cvml', 4, 4, 0, 'newt/v1', 'accuracy', 0.7, 10, '{}', '{}', '[]', '{}', 'h', 0)"
    )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with Store(db) as store:
        (row,) = store.rows()
        assert row["score"] == 0.7 and row["cost_usd"] is None and row["prompting"] is None
        assert store.n_answers() == 0
    assert sqlite3.connect(db).execute("PRAGMA user_version").fetchone()[0] == 2


# End to end, through the CLI


def test_cli_runs_a_probe_and_an_mllm_and_reports_both(mllm_server, newt_dir, config_file, tmp_path, capsys):
    path = config_file(
        f"""
        device = "cpu"
        n_workers = 0
        n_jobs = 1
        n_bootstrap = 100
        n_train = 4
        [[models]]
        org = "builtin"
        ckpt = "pixel-stats"
        [[models]]
        org = "local"
        ckpt = "test-vlm"
        method = "mllm"
        base_url = "{mllm_server.url}"
        context_tokens = 100000
        usd_per_m_input = 1.0
        usd_per_m_output = 2.0
        max_rps = 500.0
        parallel = 8
        [data]
        newt = "{newt_dir}"
        [newt]
        tasks = {list(TWO_TASKS)!r}
        """.replace("'", '"')
    )
    out = run_cli("run", str(path))
    assert out.returncode == 0, out.stderr
    assert "0 done, 2 run" in out.stdout and "$0.0408 spent" in out.stdout  # 40 answers x $0.00102
    db = tmp_path / "results" / "results.sqlite"
    out = run_cli("report", "--db", str(db))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    header = next(i for i, l in enumerate(lines) if "$/answer" in l)  # the per-n_train table, after the leaderboard
    lines = lines[header:]
    cv = next(l for l in lines if "builtin:pixel-stats" in l)
    llm = next(l for l in lines if "local:test-vlm" in l)
    assert "cvml" in cv and "mllm/single" in llm and "0.001020" in llm
    rows = json.loads(run_cli("report", "--db", str(db), "--format", "json").stdout)
    assert {(r["model"], r["method"], r["n_train"], r["n_test"]) for r in rows} == {
        ("builtin:pixel-stats", "cvml", 4, 40),
        ("local:test-vlm", "mllm", 4, 40),
    }
    # A budget already spent on the first answer stops the run with exit code 3, and nothing is lost.
    more = config_file(path.read_text().replace("n_train = 4", "n_train = 2"), name="more.toml")
    assert cli.main(["run", str(more), "--max-usd", "0.001"]) == 3
    assert "budget reached" in capsys.readouterr().out
    assert len(report.load(db)) == 3  # the new probe row is stored; the MLLM one is left for a rerun


def test_python_api_evaluates_an_mllm_and_caches_its_answers(mllm_server, newt_dir, tmp_path):
    import biobench

    model = local_model(mllm_server)
    kw = dict(n_train=2, options={"tasks": TWO_TASKS[:1]}, db=tmp_path / "r.sqlite", n_bootstrap=50)
    rep = biobench.evaluate(model, "newt", newt_dir, **kw)
    assert rep.key.method == "mllm" and rep.key.protocol.startswith("newt/v1+") and rep.key.protocol.endswith("|mllm-single")
    assert rep.n_test == 20 and rep.parse_rate == 1.0 and rep.score > 0.5
    n_requests = len(mllm_server.state.records)
    again = biobench.evaluate(model, "newt", newt_dir, **kw)  # every answer now comes from the store
    assert len(mllm_server.state.records) == n_requests and again.score == rep.score
    assert [r["method"] for r in report.load(tmp_path / "r.sqlite")] == ["mllm"]
    with pytest.raises(ConfigError, match="no mllm route"):
        biobench.evaluate(model, "hybrids", newt_dir)


def test_a_refused_connection_says_so(newt_dir):
    """litellm reports a refused connection as an HTTP 500; the failure must say nothing is listening."""
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    class Nowhere:
        url = f"http://127.0.0.1:{port}/v1"

    with pytest.raises(BiobenchError, match=f"cannot connect to http://127.0.0.1:{port}/v1 \\(is the server running"):
        run_newt(Nowhere, newt_dir, n_train=0, tasks=TWO_TASKS[:1], max_retries=1, debug=True)
