"""Review at scale: a project of 100,000 records; server time (the Server-Timing header) of the table
view's first page (with the usual filters and sorts) and of the next-record call, on SQLite and on
PostgreSQL. Target: under 200 ms each.

    python benchmarks/review_scale.py                 # SQLite, then PostgreSQL when Debian's postgresql is here
    python benchmarks/review_scale.py --records 20000 --requests 100 --no-postgres
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
TICKETS = ROOT / "src/tuneloop/examples/support_tickets.jsonl"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
TARGET_MS = 200.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def postgres():
    """A throwaway PostgreSQL 15 on 127.0.0.1 (as the postgres user when we are root)."""
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="tuneloop-bench-pg-"))
    if as_postgres:
        shutil.chown(folder, "postgres", "postgres")
    port, user = free_port(), "postgres" if as_postgres else os.environ.get("USER", "postgres")
    run = lambda *cmd: subprocess.run([*as_postgres, *cmd], check=True, capture_output=True)  # noqa: E731
    run(str(PG_BIN / "initdb"), "-D", str(folder / "data"), "-A", "trust", "-U", user, "--no-sync")
    run(str(PG_BIN / "pg_ctl"), "-D", str(folder / "data"), "-l", str(folder / "log"), "-w", "-o",
        f"-h 127.0.0.1 -p {port} -k {folder}", "start")
    try:
        run("psql", "-h", "127.0.0.1", "-p", str(port), "-U", user, "-d", "postgres", "-c", "create database bench")
        yield f"postgresql+psycopg://{user}@127.0.0.1:{port}/bench"
    finally:
        run(str(PG_BIN / "pg_ctl"), "-D", str(folder / "data"), "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def write_records(path: Path, n: int) -> list[str]:
    """n unlabelled support requests (the shipped tickets, varied), as people would import them."""
    tickets = [json.loads(line) for line in TICKETS.read_text().splitlines()]
    rng = random.Random(0)
    with path.open("w") as f:
        for i in range(n):
            t = tickets[i % len(tickets)]
            f.write(json.dumps({"text": f"{t['text']} (ref {i}-{rng.randrange(10**6)})"}) + "\n")
    return sorted({t["label"] for t in tickets})


def fake_predictions(app, project_id: str, labels: list[str]) -> None:
    """Predictions on every record, as a pre-label run leaves them (written directly: the model is not what
    this measures)."""
    from sqlalchemy import bindparam, update

    from tuneloop.store import review as store
    from tuneloop.store.tables import Record

    rng = random.Random(1)
    with app.state.sessions() as session:
        ids = [r.id for r in store.all_records(session, project_id=project_id)]
        rows = []
        for record_id in ids:
            probs = [rng.random() ** 3 for _ in labels]
            total = sum(probs)
            probs = [p / total for p in probs]
            top = sorted(probs, reverse=True)
            best = probs.index(top[0])
            rows.append({"rid": record_id, "pl": labels[best], "c": top[0], "u": 1 - (top[0] - top[1]),
                         "m": "bench-model"})
        statement = (update(Record).where(Record.id == bindparam("rid"))
                     .values(pred_label=bindparam("pl"), confidence=bindparam("c"), uncertainty=bindparam("u"),
                             pred_model=bindparam("m")))
        for start in range(0, len(rows), 5000):
            session.connection().execute(statement, rows[start : start + 5000])
        session.commit()


def server_ms(response: httpx.Response) -> float:
    response.raise_for_status()
    return float(re.search(r"dur=([\d.]+)", response.headers["server-timing"]).group(1))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def measure(backend: str, database_url: str | None, records: int, requests: int) -> list[tuple]:
    import uvicorn

    from tuneloop.api.app import create_app
    from tuneloop.config.settings import Settings
    from tuneloop.services.auth import create_user
    from tuneloop.services.review import projects

    home = Path(tempfile.mkdtemp(prefix="tuneloop-bench-"))
    settings = Settings(home=home, offline=True, database_url=database_url)
    app = create_app(settings)
    data = home / "records.jsonl"
    labels = write_records(data, records)
    started = time.perf_counter()
    with app.state.sessions() as session:
        for name in ("ann", "bob"):
            create_user(session, username=name, password=f"{name}-password", role="annotator")
        create_user(session, username="rev", password="rev-password", role="reviewer")
        project = projects.create_project(session, settings, name="big", task="classification", data=str(data),
                                          labels=labels)
        for name in ("ann", "bob", "rev"):
            projects.add_member(session, project, name)
    imported = time.perf_counter() - started
    fake_predictions(app, project.id, labels)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    clients = {}
    for name in ("ann", "bob", "rev"):
        client = httpx.Client(base_url=base, timeout=60)
        form_token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)
        client.post("/login", data={"username": name, "password": f"{name}-password", "next": "/",
                                    "csrf": form_token})
        token = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/").text).group(1)
        client.headers["X-CSRF-Token"] = token
        clients[name] = client
    results = []
    table_queries = {
        "table: first page": {},
        "table: sort by confidence": {"sort": "confidence", "descending": "true"},
        "table: prediction filter": {"prediction": labels[0]},
        "table: search text": {"search": "refund"},
        "table: open, most uncertain": {"status": "open", "sort": "uncertainty", "descending": "true"},
    }
    rev = clients["rev"]
    for name, params in table_queries.items():
        timings = [server_ms(rev.get("/api/projects/big/records", params={**params, "limit": 50}))
                   for _ in range(max(10, requests // 5))]
        results.append((backend, name, timings))
    for order in ("uncertainty", "random"):
        nexts, submits = [], []
        for i in range(requests):
            client = clients["ann" if i % 2 else "bob"]
            response = client.get("/api/projects/big/next", params={"order": order})
            nexts.append(server_ms(response))
            record = response.json()["record"]
            submits.append(server_ms(client.post(f"/api/projects/big/records/{record['id']}/annotations",
                                                 json={"value": {"label": labels[i % len(labels)]}})))
        results.append((backend, f"next record ({order})", nexts))
        results.append((backend, "submit an annotation", submits))
    results.append((backend, "project page data", [server_ms(rev.get("/api/projects/big")) for _ in range(5)]))
    server.should_exit = True
    thread.join(10)
    app.state.engine.dispose()
    shutil.rmtree(home, ignore_errors=True)
    print(f"[{backend}] imported {records:,} records in {imported:.1f} s")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    results = measure("sqlite", None, args.records, args.requests)
    if not args.no_postgres and (PG_BIN / "initdb").exists():
        with postgres() as url:
            results += measure("postgresql", url, args.records, args.requests)
    print(f"\nserver time in ms over {args.records:,} records (target: p95 under {TARGET_MS:.0f} ms)")
    print(f"{'database':<11} {'call':<30} {'n':>4} {'p50':>8} {'p95':>8} {'max':>8}  target")
    for backend, name, timings in results:
        p95 = percentile(timings, 0.95)
        print(f"{backend:<11} {name:<30} {len(timings):>4} {statistics.median(timings):>8.1f} {p95:>8.1f} "
              f"{max(timings):>8.1f}  {'ok' if p95 < TARGET_MS else 'MISSED'}")


if __name__ == "__main__":
    main()
