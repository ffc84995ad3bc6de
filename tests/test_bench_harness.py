"""The benchmark harness's own logic (issue 15): the median over runs, the targets, the chart,
and the single-use requests of the new endpoints, which a real daemon must accept exactly once.

The figures of ``make bench`` mean nothing unless every request it sends does what it claims;
``make bench-smoke`` checks the whole harness end to end, these check its parts.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import httpx
import matplotlib.image
import pytest

from bench import chart, readme, report
from bench.__main__ import build_parser, usage_problem
from bench.configs import Secrets, Setup, write_config
from bench.loadgen import LoadResult
from bench.matrix import Measured
from bench.preload import preload_leveldb, preload_sync
from bench.procs import daemon_argv, python_module, server
from bench.signed_requests import (
    HeartbeatPool,
    UpdatePool,
    node_host,
    register_nodes,
)
from bench.workload import resolve_requests

JSON = {"content-type": "application/json"}  # as bench/requests.lua sends
LOAD = LoadResult("wrk", 1000, 1.0, 1000.0, 5.0, 8.0, 9.0, 12.0, 0, 32)


def measured(endpoint: str, rps: float, *, p99_half: float = 4.0, errors: int = 0) -> Measured:
    half = replace(LOAD, rps=rps / 2, p99_ms=p99_half, errors=errors)
    return Measured(endpoint, "leveldb", "http", replace(LOAD, rps=rps), half)


def one_run(floor: float, resolve: float, **half: float) -> list[report.Row]:
    return report.rows_of(
        [measured("floor_post", floor), measured("resolve_hit", resolve, **half)]  # type: ignore[arg-type]
    )


def test_the_median_ratio_is_taken_over_each_runs_own_ratio() -> None:
    runs = [one_run(1000, 950), one_run(2000, 1000), one_run(1000, 800, p99_half=30.0)]
    rows = {row.key[0]: row for row in report.medians(runs)}
    resolve = rows["resolve_hit"]
    # per run 0.95, 0.50, 0.80: the median is 0.80; median rps / median floor would be 0.95
    assert resolve.ratio == pytest.approx(0.80)
    assert resolve.measured.peak.rps == 950 and resolve.floor_rps == 1000
    assert resolve.measured.half.p99_ms == 4.0  # one slow run does not make the cell slow
    assert [run.ratio for run in resolve.runs] == pytest.approx([0.95, 0.5, 0.8])
    document = resolve.to_json()
    assert document["runs"] == [run.to_json() for run in resolve.runs]
    assert [run.measured.peak.rps for run in resolve.runs] == [950, 1000, 800]


def test_a_cell_with_errors_in_any_run_fails() -> None:
    runs = [one_run(1000, 990), one_run(1000, 990, errors=3), one_run(1000, 990)]
    resolve = report.medians(runs)[1]
    assert resolve.errors == 3 and resolve.met == 0 and resolve.result.startswith("FAIL")


def test_a_single_run_is_reported_as_measured() -> None:
    run = one_run(1000, 950)
    assert report.medians([run]) == run


def test_the_issue_15_targets() -> None:
    cells = {
        ("resolve_hit", "leveldb"): 0.90,
        ("resolve_miss", "leveldb"): 0.90,
        ("resolve_hit", "memory"): 0.85,
        ("presence_resolve", "redis"): 0.85,
        ("check_user", "memory"): 0.95,
        ("register", "leveldb"): 0.60,
        ("register", "memory"): None,
        ("nodes", "leveldb"): None,
        ("heartbeat", "leveldb"): None,
        ("update", "leveldb"): None,
    }
    for (endpoint, storage), target in cells.items():
        row = report.Row.targeted(replace(measured(endpoint, 100), storage=storage), 1000, 0.1)
        assert row.target == target, (endpoint, storage)
        report_only = endpoint in ("nodes", "heartbeat", "update")
        assert (row.target_p99_ms is None) is report_only
        assert (row.result == "report only") is report_only
        assert row.targets == (target is not None) + (not report_only)


def test_usage_problems_exit_before_any_run() -> None:
    parser = build_parser()
    assert usage_problem(parser.parse_args(["--runs", "3"])) is None
    assert usage_problem(parser.parse_args(["--runs", "0"])) == "--runs: at least 1"
    problem = usage_problem(parser.parse_args(["--owners", "16", "--connections", "32"]))
    assert problem is not None and "--owners" in problem
    assert (
        usage_problem(parser.parse_args(["--owners", "16", "--endpoints", "resolve_hit"])) is None
    )


def test_the_chart_draws_medians_with_red_for_targets_only(tmp_path: Path) -> None:
    runs = [one_run(1000, 950), one_run(2000, 1000), one_run(1000, 800)]
    rows = report.medians(runs)
    document = {"endpoints": [row.to_json() for row in rows], "checks": []}
    again, _ = chart.from_json(document)
    assert [(r.key, len(r.runs)) for r in again] == [(r.key, 3) for r in rows]
    assert [r.ratio for r in again] == pytest.approx([r.ratio for r in rows])
    assert again[1].target == 0.90  # resolve on LevelDB today
    document["endpoints"][1]["target_ratio"] = 0.85
    older, _ = chart.from_json(document)
    assert older[1].target == 0.85  # a results file is drawn with the targets it was judged by
    combos = [(s, m) for s in ("memory", "leveldb", "redis", "other") for m in ("http", "tls")]
    assert chart.TARGET not in {chart.color_of(c, i) for i, c in enumerate(combos)}
    out = chart.draw(again, [], tmp_path / "chart.png", chart.title_of("now", 10, 3, 2))
    height, width, _ = matplotlib.image.imread(out).shape
    assert (width, height) == (1600, 1050)


def test_the_readme_tables_hold_the_median_cells_and_mark_the_misses() -> None:
    rows = report.medians([one_run(1000, 950), one_run(2000, 1000), one_run(1000, 800)])
    document = {"endpoints": [row.to_json() for row in rows], "checks": []}
    lines = readme.endpoint_table(document).splitlines()
    assert lines[0] == "| endpoint | leveldb/http | target |"
    # medians: of the rps (800, 950, 1000) and of each run's own ratio (0.95, 0.50, 0.80)
    assert lines[2] == "| floor_post | 1000 · 4.0 ms | floor |"
    x = readme.TIMES
    assert lines[3] == f"| resolve_hit | **950 (0.80{x}) · 4.0 ms** | ≥ 0.90{x}, p99 < 10 ms |"
    passing = report.rows_of([measured("floor_post", 1000), measured("resolve_hit", 950)])
    cell = readme.endpoint_table({"endpoints": [r.to_json() for r in passing], "checks": []})
    assert f"| 950 (0.95{x}) · 4.0 ms |" in cell  # a met target is not marked


@pytest.mark.e2e
def test_updates_and_heartbeats_are_valid_and_single_use(tmp_path: Path) -> None:
    """Every pre-made update and heartbeat is accepted by a real daemon, in file order; sent
    again, each is refused (409 stale timestamp, 401): so the bench measures real writes."""
    secrets = Secrets.generate()
    setup = Setup("memory", "http")
    config = write_config(tmp_path / "d.toml", secrets, setup, data_dir=tmp_path / "db", certs=None)
    updates = UpdatePool(secrets, owners=4, seed=7)
    heartbeats = HeartbeatPool(secrets, nodes=3, seed=7)
    with server(daemon_argv(config), tmp_path / "daemon.log") as url:
        preload_sync(url, secrets, 10, 7, None, owners=4)
        register_nodes(url, 3, 7, None)
        slices = [updates.take(tmp_path / f"u{i}.tsv", 9) for i in range(2)]
        slices += [heartbeats.take(tmp_path / f"h{i}.tsv", 7) for i in range(2)]
        with httpx.Client(base_url=url) as client:
            listing = client.get("/api/nodes").json()["nodes"]
            assert sorted(n["host"] for n in listing) == sorted(node_host(i) for i in range(3))
            lines = [
                line.split(b"\t") for file in slices for line in file.file.read_bytes().splitlines()
            ]
            assert len(lines) == 32
            for method, path, body in lines:
                answer = client.request(method.decode(), path.decode(), content=body, headers=JSON)
                assert answer.status_code == 200, answer.text
            for method, path, body in lines:
                answer = client.request(method.decode(), path.decode(), content=body, headers=JSON)
                refused = 409 if path == b"/identity/update" else 401  # stale ts / spent nonce
                assert answer.status_code == refused, answer.text
            updated = client.get("/api/nodes").json()["nodes"]
            assert {n["status"] for n in updated} == {"online"}


@pytest.mark.e2e
def test_the_bare_resolve_answers_what_the_daemon_answers(tmp_path: Path) -> None:
    """``bench.bare`` bounds resolve only if it does a resolve's whole protocol work: for the
    same requests (hits and misses) it answers 200 with the daemon's fields, kid and envelope
    lengths, the same key, a fresh nonce each time."""
    secrets = Secrets.generate()
    setup = Setup("leveldb", "http")
    preload_leveldb(tmp_path / "db-a", secrets, 20, 7)
    shutil.copytree(tmp_path / "db-a", tmp_path / "db-b")
    bare_config = write_config(
        tmp_path / "a.toml", secrets, setup, data_dir=tmp_path / "db-a", certs=None
    )
    daemon_config = write_config(
        tmp_path / "b.toml", secrets, setup, data_dir=tmp_path / "db-b", certs=None
    )
    bodies = []
    for hits in (True, False):
        requests = resolve_requests(
            tmp_path / f"r{hits}.tsv", hits=hits, identities=20, lines=5, seed=7
        )
        bodies += [line.split(b"\t")[2] for line in requests.file.read_bytes().splitlines()]
    bare_argv = python_module("bench.bare", "serve", "--config", str(bare_config))
    with (
        server(bare_argv, tmp_path / "bare.log") as bare_url,
        server(daemon_argv(daemon_config), tmp_path / "daemon.log") as daemon_url,
    ):
        answers = []
        for url in (bare_url, daemon_url):
            with httpx.Client(base_url=url) as client:
                answers.append([client.post("/resolve", content=b, headers=JSON) for b in bodies])
    for bare, daemon in zip(*answers, strict=True):
        assert (bare.status_code, daemon.status_code) == (200, 200)
        mine, theirs = bare.json(), daemon.json()
        assert mine.keys() == theirs.keys()
        assert mine["handle"] == theirs["handle"]
        envelope, expected = mine["envelope"], theirs["envelope"]
        assert envelope.keys() == expected.keys()
        assert (envelope["kid"], envelope["sender_pubkey"]) == (
            expected["kid"],
            expected["sender_pubkey"],
        )
        assert envelope["nonce"] != expected["nonce"]
        for field in envelope:
            assert len(envelope[field]) == len(expected[field]), field
