"""The table: medians (min–max) over repetitions, one column per system and durability
level, the perdure/peer ratios, and perdure's targets from BENCHMARKS.md, as text for the
terminal and as Markdown for docs/benchmarks.md."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Record = dict[str, Any]

# (system, backend) of each column; the durability label is filled in from the run
COLUMNS = [
    ("perdure", "sqlite"),
    ("perdure", "postgres"),
    ("dbos", "sqlite"),
    ("dbos", "postgres"),
    ("restate", None),
    ("temporal", None),
]
NAMES = {"perdure": "perdure", "dbos": "DBOS", "restate": "Restate", "temporal": "Temporal"}
SCOPE = {  # what BENCHMARKS.md measures for each peer; outside it a cell says so
    "dbos": {"W0", "W1", "W2", "W3", "W4", "W5"},
    "restate": {"W1", "W2", "W3", "W4"},
    "temporal": {"W1", "W2", "W3", "W4"},
}
WHY_NOT = {
    ("restate", "W0"): "n/a: own log",
    ("temporal", "W0"): "n/a: own store",
}


@dataclass(frozen=True)
class Row:
    label: str
    workload: str
    get: Callable[[Record], float | None]
    fmt: str = "{:.0f}"
    better: str = "lower"  # for the ratio: which way is faster


def _path(*keys: str) -> Callable[[Record], float | None]:
    def get(result: Record) -> float | None:
        value: Any = result
        for key in keys:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return None if value is None else float(value)

    return get


def _w5(which: int, field: str) -> Callable[[Record], float | None]:
    def get(result: Record) -> float | None:
        sizes = sorted(int(k) for k in result if k.isdigit())
        if len(sizes) <= which:
            return None
        return float(result[str(sizes[which])][field])

    return get


ROWS = [
    Row("W1 µs per step", "W1", _path("us_per_step")),
    Row("W2 runs/s (1 worker)", "W2", _path("runs_per_s"), better="higher"),
    Row("W3 p50 ms", "W3", _path("p50_ms"), "{:.1f}"),
    Row("W3 p99 ms", "W3", _path("p99_ms"), "{:.1f}"),
    Row("W4 restart → all done, s", "W4", _path("restart_to_done_s"), "{:.2f}"),
    Row("W4 late vs deadline (max), s", "W4", _path("max_late_vs_deadline_s"), "{:.2f}"),
    Row("W4 re-run steps", "W4", lambda r: float(r["reruns_a"] + r["reruns_b"]), "{:.0f}"),
    Row("W5 RSS growth/parked run, B (1st N)", "W5", _w5(0, "bytes_per_parked_run")),
    Row("W5 RSS growth/parked run, B (2nd N)", "W5", _w5(1, "bytes_per_parked_run")),
    Row("W5 peak RSS at 2nd N, MiB", "W5", lambda r: (_w5(1, "peak_rss")(r) or 0) / 2**20 or None, "{:.0f}"),
    Row("W6 claim → first new step, ms", "W6", _path("claim_to_new_step_ms"), "{:.0f}"),
    Row("W8 p50 ms (many finished runs)", "W8", _path("p50_ms"), "{:.1f}"),
    Row("W8 p99 ms (many finished runs)", "W8", _path("p99_ms"), "{:.1f}"),
]


def values(records: list[Record], system: str, workload: str, backend: str | None,
           get: Callable[[Record], float | None]) -> list[float]:
    found = []
    for r in records:
        if (r["system"], r["workload"], r["backend"]) == (system, workload, backend) and "result" in r:
            v = get(r["result"])
            if v is not None:
                found.append(v)
    return found


def errors(records: list[Record], system: str, workload: str, backend: str | None) -> list[str]:
    return [r["error"] for r in records
            if (r["system"], r["workload"], r["backend"]) == (system, workload, backend) and "error" in r]


def cell(found: list[float], fmt: str) -> str:
    if not found:
        return ""
    median = fmt.format(statistics.median(found))
    if len(found) == 1:
        return median
    return f"{median} ({fmt.format(min(found))}–{fmt.format(max(found))})"


def median(found: list[float]) -> float | None:
    return statistics.median(found) if found else None


def empty_cell(records: list[Record], system: str, workload: str, backend: str | None,
               selected: set[str], systems: set[str]) -> str:
    if (system, workload) in WHY_NOT:
        return WHY_NOT[(system, workload)]
    if system in SCOPE and workload not in SCOPE[system]:
        return "out of scope"
    if workload == "W7" and backend == "sqlite":
        return "PostgreSQL only"
    if errors(records, system, workload, backend):
        return "FAILED (see JSON)"
    if workload not in selected or system not in systems:
        return "not selected"
    return "no result"


def floor_label(system: str, backend: str | None, synchronous: str) -> str | None:
    if backend == "sqlite":
        return "rollback+FULL" if system == "dbos" else f"WAL+{synchronous.upper()}"
    if backend == "postgres":
        return "sync on"
    return None


def build(run: dict[str, Any]) -> dict[str, Any]:
    """Headers, rows of cells, ratio rows and target lines: what both renderings show."""
    records: list[Record] = run["records"]
    selected, systems = set(run["workloads"]), set(run["systems"])
    columns = [c for c in COLUMNS if c[0] in systems]
    headers = [f"{NAMES[s]} {run['durability'].get(f'{s}/{b}', b or '')}" for s, b in columns]
    table: list[list[str]] = []
    medians: dict[tuple[str, str, str | None], float | None] = {}

    floors = {}
    for backend in ("sqlite", "postgres"):
        for r in records:
            if (r["system"], r["workload"], r["backend"]) == ("floor", "W0", backend) and "result" in r:
                for label, v in r["result"]["us_per_commit"].items():
                    floors.setdefault((backend, label), []).append(v)

    w0 = ["W0 floor µs/commit (same level)"]
    for system, backend in columns:
        if system in ("restate", "temporal"):
            w0.append(WHY_NOT[(system, "W0")])
            continue
        labels = ["rollback+FULL"] if (system, backend) == ("dbos", "sqlite") else (
            ["WAL+FULL", "WAL+NORMAL"] if backend == "sqlite" else ["sync on", "sync off"])
        parts = [f"{lab} {cell(floors.get((backend, lab), []), '{:.0f}')}" for lab in labels
                 if floors.get((backend, lab))]
        w0.append("; ".join(parts) or empty_cell(records, "floor", "W0", backend, selected, systems | {"floor"}))
    if "W0" in selected or "W1" in selected:
        table.append(w0)

    for row in ROWS:
        if row.workload not in selected:
            continue
        line = [row.label]
        for system, backend in columns:
            found = values(records, system, row.workload, backend, row.get)
            medians[(row.label, system, backend)] = median(found)
            line.append(cell(found, row.fmt) or empty_cell(records, system, row.workload, backend, selected, systems))
        table.append(line)
        if row.workload == "W1":
            ratio = ["W1 per step / own floor"]
            for system, backend in columns:
                label = floor_label(system, backend, run["sqlite_synchronous"])
                step, floor = medians[(row.label, system, backend)], median(floors.get((backend, label or ""), []))
                ratio.append(f"{step / floor:.1f}× ({label})" if step and floor else "n/a")
            table.append(ratio)
        if row.workload == "W3" and row.label.endswith("p99 ms"):
            table.append(w3_floor_row(records, columns))
        if row.workload == "W3" and row.label.endswith("p50 ms") and "dbos" in systems:
            direct = ["W3 DBOS direct, in-process, p50/p99 ms"]
            for system, backend in columns:
                if system != "dbos":
                    direct.append("")
                    continue
                p50 = values(records, "dbos", "W3-direct", backend, _path("p50_ms"))
                p99 = values(records, "dbos", "W3-direct", backend, _path("p99_ms"))
                direct.append(f"{cell(p50, '{:.1f}')} / {cell(p99, '{:.1f}')}" if p50 else "")
            table.append(direct)
    local = values(records, "temporal", "W1", None, _path("us_per_step_local_activity"))
    notes = []
    if local:
        notes.append(f"Temporal W1 with local activities (not checkpointed per step): "
                     f"{cell(local, '{:.0f}')} µs per step")

    w7 = w7_rows(records, columns)
    ratio_headers, ratios = ratio_rows(medians, columns)
    notes.insert(0, run["durability"].get("legend", ""))
    return {"headers": ["figure", *headers], "table": table + w7, "ratios": ratios, "ratio_headers": ratio_headers,
            "targets": targets(records, floors, run["sqlite_synchronous"]), "notes": notes}


def w7_rows(records: list[Record], columns: list[tuple[str, str | None]]) -> list[list[str]]:
    rows = []
    counts = sorted({k for r in records if r["workload"] == "W7" and "result" in r
                     for k in r["result"]["by_workers"]}, key=int)
    for count in counts:
        for label, key, fmt in (("runs/s", "runs_per_s", "{:.0f}"), ("CPU-ms/run", "cpu_s_per_run", "{:.2f}")):
            line = [f"W7 {count} workers, {label}"]
            for system, backend in columns:
                scale = 1000 if key == "cpu_s_per_run" else 1
                found = [scale * v for v in values(records, system, "W7", backend, _path("by_workers", count, key))]
                line.append(cell(found, fmt) or ("PostgreSQL only" if backend == "sqlite" and system == "perdure"
                                                 else "out of scope"))
            rows.append(line)
    return rows


def ratio_rows(medians: dict[tuple[str, str, str | None], float | None],
               columns: list[tuple[str, str | None]]) -> tuple[list[str], list[list[str]]]:
    """perdure/peer on medians: a row per figure and perdure backend, a column per peer;
    a peer with backends of its own (DBOS) is compared on the same backend only."""
    peers = [s for s in dict.fromkeys(s for s, _ in columns) if s != "perdure"]
    rows = []
    for row in ROWS:
        for backend in ("sqlite", "postgres"):
            mine = medians.get((row.label, "perdure", backend))
            if not mine:
                continue
            line = [f"{row.label}, perdure {backend}"]
            for system in peers:
                peer_backend = backend if system == "dbos" else None
                theirs = medians.get((row.label, system, peer_backend))
                if not theirs:
                    line.append("")
                    continue
                ratio = mine / theirs
                faster = 1 / ratio if row.better == "lower" else ratio
                timing = row.workload in ("W1", "W2", "W3", "W4") and "re-run" not in row.label
                how = f"{faster:.1f}× faster" if faster >= 1 else f"{1 / faster:.1f}× slower"
                verdict = f" ({how})" if timing else ""
                line.append(f"{ratio:.2f}{verdict}")
            if any(line[1:]):
                rows.append(line)
    headers = ["figure", *[f"/ {NAMES[p]}" + (" (same backend)" if p == "dbos" else "") for p in peers]]
    return headers, rows


def w3_floor_row(records: list[Record], columns: list[tuple[str, str | None]]) -> list[str]:
    """W3's bare path (bench/floor.py) in each column of its backend: the latency of the
    mechanisms alone, beside each system's."""
    line = ["W3 bare path p50 / p99 ms (floor)"]
    for _system, backend in columns:
        p50 = values(records, "floor", "W3", backend, _path("p50_ms"))
        p99 = values(records, "floor", "W3", backend, _path("p99_ms"))
        line.append(f"{cell(p50, '{:.1f}')} / {cell(p99, '{:.1f}')}" if p50 and p99 else "n/a")
    return line


def targets(records: list[Record], floors: dict[tuple[str, str], list[float]], synchronous: str) -> list[str]:
    """perdure's targets from BENCHMARKS.md, each met or not on this run's medians."""
    lines = []
    for backend, label in (("sqlite", f"WAL+{synchronous.upper()}"), ("postgres", "sync on")):
        step = median(values(records, "perdure", "W1", backend, _path("us_per_step")))
        floor = median(floors.get((backend, label), []))
        if step and floor:
            normal = backend == "sqlite" and synchronous.lower() == "normal"
            bound = floor + 60 if normal else 1.25 * floor + 50
            lines.append(_verdict(f"W1 {backend}: {step:.0f} µs/step ≤ {bound:.0f} µs "
                                  f"({'floor + 60' if normal else '1.25 × floor + 50'}; floor {floor:.0f})", step <= bound))
        if step:
            lines += _peer_targets(records, "W1", backend, "us_per_step", step,
                                   {"dbos": 8 if backend == "sqlite" else 4, "restate": 5})
        rate = median(values(records, "perdure", "W2", backend, _path("runs_per_s")))
        if rate:
            lines.append(_verdict(f"W2 {backend}: {rate:.0f} runs/s ≥ 1000", rate >= 1000))
            lines += _peer_targets(records, "W2", backend, "runs_per_s", rate, {"dbos": 10, "restate": 6})
        p50 = median(values(records, "perdure", "W3", backend, _path("p50_ms")))
        p99 = median(values(records, "perdure", "W3", backend, _path("p99_ms")))
        if p50 is not None and p99 is not None:
            bare = median(values(records, "floor", "W3", backend, _path("p50_ms")))
            beside = f" (bare path p50 {bare:.1f} ms)" if bare else ""
            lines.append(_verdict(f"W3 {backend}: p50 {p50:.1f} ms < 2, p99 {p99:.1f} ms < 10{beside}",
                                  p50 < 2 and p99 < 10))
        late = median(values(records, "perdure", "W4", backend, _path("max_late_vs_deadline_s")))
        reruns = values(records, "perdure", "W4", backend, lambda r: r["reruns_a"] + r["reruns_b"] - r["reruns_in_flight_at_kill"])
        if late is not None:
            lines.append(_verdict(f"W4 {backend}: last run done {late:.2f} s after its deadline ≤ 1 s; "
                                  f"re-runs of steps not in flight: {int(max(reruns))}", late <= 1 and max(reruns) == 0))
        flat = values(records, "perdure", "W5", backend, _w5_growth)
        if flat:
            lines.append(_verdict(f"W5 {backend}: RSS at the larger N / at the smaller N = {median(flat):.2f} (flat ≤ 1.10)",
                                  (median(flat) or 9) <= 1.10))
        resume = median(values(records, "perdure", "W6", backend, _path("claim_to_new_step_ms")))
        if resume is not None:
            lines.append(_verdict(f"W6 {backend}: {resume:.0f} ms < 100", resume < 100))
        if backend == "postgres":
            lines += _w7_targets(records)
        for q, limit in (("p50_ms", 1.5), ("p99_ms", 1.5)):
            grown = median(values(records, "perdure", "W8", backend, _path(q)))
            empty = median(values(records, "perdure", "W3", backend, _path(q)))
            if grown and empty:
                lines.append(_verdict(f"W8 {backend}: {q[:3]} {grown:.1f} ms vs {empty:.1f} ms empty = "
                                      f"{grown / empty:.2f}× ≤ {limit}", grown / empty <= limit))
    return lines


def _peer_targets(records: list[Record], workload: str, backend: str, key: str, mine: float,
                  asked: dict[str, float]) -> list[str]:
    """The same target as BENCHMARKS.md words it against the peers of this run (e.g. W1 at
    least 8× faster than DBOS on SQLite): a peer's figure on this machine, not a fixed
    number, so it holds on a slower or faster machine alike. DBOS on the same backend."""
    lines = []
    for system, times in asked.items():
        theirs = median(values(records, system, workload, backend if system == "dbos" else None, _path(key)))
        if not theirs:
            continue
        faster = theirs / mine if key.startswith("us_") else mine / theirs
        lines.append(_verdict(f"{workload} {backend}: {faster:.1f}× faster than {NAMES[system]} (≥ {times:g}×)",
                              faster >= times))
    return lines


def _w5_growth(result: Record) -> float | None:
    sizes = sorted(int(k) for k in result if k.isdigit())
    if len(sizes) < 2:
        return None
    return float(result[str(sizes[-1])]["rss"]) / float(result[str(sizes[0])]["rss"])


def _w7_targets(records: list[Record]) -> list[str]:
    one = median(values(records, "perdure", "W7", "postgres", _path("by_workers", "1", "cpu_s_per_run")))
    four = median(values(records, "perdure", "W7", "postgres", _path("by_workers", "4", "cpu_s_per_run")))
    r1 = median(values(records, "perdure", "W7", "postgres", _path("by_workers", "1", "runs_per_s")))
    r4 = median(values(records, "perdure", "W7", "postgres", _path("by_workers", "4", "runs_per_s")))
    if not (one and four and r1 and r4):
        return []
    return [_verdict(f"W7 postgres: CPU-s/run 4 workers / 1 = {four / one:.2f} (≤ 1.20); runs/s {r1:.0f} → {r4:.0f}",
                     four / one <= 1.2 and r4 >= r1)]


def _verdict(text: str, met: bool) -> str:
    return f"{'met    ' if met else 'NOT met'}  {text}"


# --- rendering -----------------------------------------------------------------------


def header(run: dict[str, Any]) -> str:
    m, t = run.get("machine", {}), run.get("tree", {})
    load = lambda key: "/".join(f"{x:.1f}" for x in m.get(key, []))  # noqa: E731
    return (f"{'quick' if run.get('quick') else 'full'} run {run.get('started', '?')}, "
            f"{run.get('reps')} repetition(s); perdure {t.get('commit', '?')[:10]}"
            f"{' + uncommitted changes' if t.get('perdure_uncommitted') else ''}; "
            f"{m.get('cores')} cores {m.get('cpu', '')}, {m.get('memory_bytes', 0) / 2**30:.0f} GiB; "
            f"load average {load('loadavg_start')} at the start, {load('loadavg_end')} at the end")


def changed(run: dict[str, Any]) -> str | None:
    """A warning when perdure's code changed while the run went on (each measurement
    records the commit it ran, and whether perdure/ had uncommitted changes)."""
    seen = {(r["tree"]["commit"][:10], r["tree"]["perdure_uncommitted"])
            for r in run["records"] if r.get("system") == "perdure" and "tree" in r}
    if len(seen) <= 1:
        return None
    listed = ", ".join(f"{c}{' + uncommitted' if dirty else ''}" for c, dirty in sorted(seen))
    return f"WARNING: perdure's code changed during this run; its measurements ran on {listed}"


def text(run: dict[str, Any]) -> str:
    built = build(run)
    out = [header(run), *filter(None, [changed(run)]), "", _grid(built["headers"], built["table"])]
    out += ["", *built["notes"]] if built["notes"] else []
    if built["ratios"]:
        out += ["", "perdure / peer (medians; for times and memory below 1 is better, for runs/s above 1)",
                _grid(built["ratio_headers"], built["ratios"])]
    if built["targets"]:
        out += ["", "perdure's targets (BENCHMARKS.md), on this run's medians", *built["targets"]]
    return "\n".join(out)


def markdown(run: dict[str, Any]) -> str:
    built = build(run)
    out = [header(run) + ".", *filter(None, [changed(run)]), "", _md(built["headers"], built["table"])]
    out += ["", *[f"- {n}" for n in built["notes"]]] if built["notes"] else []
    if built["ratios"]:
        out += ["", "perdure / peer (medians; for times and memory below 1 is better, for runs/s above 1):", "",
                _md(built["ratio_headers"], built["ratios"])]
    if built["targets"]:
        out += ["", "Targets on this run's medians:", "", *[f"- `{t}`" for t in built["targets"]]]
    return "\n".join(out)


def _grid(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def main() -> None:
    """`python -m bench.report RESULTS.json [--markdown]`: the table of a saved run."""
    import json
    import sys

    from pathlib import Path

    run = json.loads(Path(sys.argv[1]).read_text())
    print(markdown(run) if "--markdown" in sys.argv else text(run))


def _md(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
