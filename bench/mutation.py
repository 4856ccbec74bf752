"""`make mutation`: mutation testing of the engine and the calendar (issue 14).

mutmut (its settings are `[tool.mutmut]` in pyproject.toml) mutates `service/engine/` and
`service/calendar.py` in a copy of the project (`mutants/`) and runs the engine's and the
calendar's unit tests against each mutant, in workers forked from one warm process.

Why every mutant not killed there is run again in a fresh interpreter: the engine keeps
`lru_cache`s (festival positions, window tables) that the warm process has already
filled, so a mutant of a function that is only reached through a cache never runs there
and looks like a survivor. The fresh run takes the whole test selection, not only the
tests mutmut linked to the function, because those links were recorded through the same
warm caches.

What remains is compared with `docs/mutation-survivors.md`: each line there names one
mutant, its mutated line and why it cannot change a result. The last line printed is

    mutation score: X% (killed/total); N listed as harmless in docs/mutation-survivors.md

and the exit status is 1 when a survivor is not listed (or its listed line no longer
matches the mutant), so a new gap fails the target instead of hiding in the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = ROOT / "mutants"
SURVIVORS_DOC = Path("docs/mutation-survivors.md")
KILLED_CODES = frozenset({1, 3})  # a failing test / an internal pytest error
TIMEOUT_CODES = frozenset({-24, 24, 152, 255, 36})  # mutmut's SIGXCPU and timeout codes
ENTRY = re.compile(r"^- `(?P<name>[^`]+)` `(?P<line>[^`]*)`: (?P<why>\S.*)$")


@dataclass(frozen=True, slots=True)
class Listed:
    line: str
    why: str


def _config() -> dict:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return dict(tomllib.load(f)["tool"]["mutmut"])


def _check_selection(selection: list[str]) -> None:
    """Every engine test file must be in the selection, so a new one cannot be forgotten."""
    wanted = {
        p.relative_to(ROOT).as_posix()
        for pattern in ("tests/unit/test_engine_*.py", "tests/unit/test_calendar.py")
        for p in ROOT.glob(pattern)
    }
    wanted.add("tests/unit/engine/test_baseline_vs_engine.py")
    missing = sorted(wanted - set(selection))
    if missing:
        sys.exit(f"add to [tool.mutmut] pytest_add_cli_args_test_selection: {missing}")


def _run_mutmut(jobs: int) -> None:
    shutil.rmtree(MUTANTS, ignore_errors=True)  # mutmut reuses stale copies otherwise
    MUTANTS.mkdir()
    log = MUTANTS / "mutmut-run.log"
    mutmut = Path(sys.executable).with_name("mutmut")
    print(f"mutmut run --max-children {jobs} (log: {log.relative_to(ROOT)})", flush=True)
    with log.open("w") as out:
        code = subprocess.call(
            [str(mutmut), "run", "--max-children", str(jobs)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    tail = log.read_text(errors="replace").replace("\r", "\n").strip().splitlines()
    print("  " + (tail[-2] if len(tail) > 1 else "(no output)").strip(), flush=True)
    if code != 0:
        print("\n".join(tail[-40:]))
        sys.exit(f"mutmut run failed with exit code {code}")


def _results() -> dict[str, tuple[int | None, str]]:
    """mutant name -> (mutmut exit code, source path of the mutated file)."""
    out: dict[str, tuple[int | None, str]] = {}
    for meta in sorted(MUTANTS.rglob("*.py.meta")):
        source = meta.relative_to(MUTANTS).as_posix().removesuffix(".meta")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        out.update({name: (code, source) for name, code in codes.items()})
    if not out:
        sys.exit("mutmut left no results under mutants/")
    return out


def _fresh(name: str, selection: list[str], extra: list[str], timeout: float) -> int:
    """Run the whole selection against one mutant in a new interpreter: its exit code."""
    env = {**os.environ, "MUTANT_UNDER_TEST": name, "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "pytest", "-x", "-q", "--no-header", "-p", "no:randomly"]
    try:
        return subprocess.run(
            [*command, *extra, *selection],
            cwd=MUTANTS,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
        ).returncode
    except subprocess.TimeoutExpired:
        return -24


def _sanity(selection: list[str], extra: list[str]) -> float:
    """The fresh runs must see the mutated copy: clean passes, the forced failure fails."""
    t0 = time.perf_counter()
    if _fresh("", selection, extra, 600) != 0:
        sys.exit("the unmutated tests fail in mutants/: fix them first")
    clean = time.perf_counter() - t0
    if _fresh("fail", selection, extra, 600) == 0:
        sys.exit("a fresh run in mutants/ does not load the mutated code (forced fail passed)")
    return clean


def _mutated_line(name: str, source: str) -> str:
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    cwd = Path.cwd()
    os.chdir(ROOT)
    try:
        diff = get_diff_for_mutant(name, path=source)
    finally:
        os.chdir(cwd)
    added = [
        line[1:].strip()
        for line in diff.splitlines()
        if line.startswith("+") and not line.startswith("+++")
    ]
    return " / ".join(added)


def _listed() -> dict[str, Listed]:
    path = ROOT / SURVIVORS_DOC
    entries: dict[str, Listed] = {}
    if path.exists():
        for raw in path.read_text().splitlines():
            m = ENTRY.match(raw)
            if m:
                entries[m["name"]] = Listed(m["line"], m["why"])
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--reuse", action="store_true", help="skip `mutmut run`; re-check its results in mutants/"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    os.chdir(ROOT)
    config = _config()
    selection = list(config["pytest_add_cli_args_test_selection"])
    extra = list(config.get("pytest_add_cli_args", []))
    _check_selection(selection)
    if not args.reuse:
        _run_mutmut(args.jobs)
    results = _results()
    total = len(results)
    killed = {n for n, (code, _) in results.items() if code in KILLED_CODES | TIMEOUT_CODES}
    suspects = sorted(set(results) - killed)

    clean = _sanity(selection, extra)
    print(f"re-running {len(suspects)} of {total} mutants in fresh processes", flush=True)
    limit = max(60.0, 10 * clean)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        codes = pool.map(lambda n: _fresh(n, selection, extra, limit), suspects)
        fresh = dict(zip(suspects, codes, strict=True))
    odd = {n: c for n, c in fresh.items() if c not in KILLED_CODES | TIMEOUT_CODES | {0}}
    for name, code in sorted(odd.items()):
        print(f"  {name}: pytest exit code {code}, counted as killed")
    killed |= {n for n, c in fresh.items() if c != 0}
    survivors = sorted(n for n, c in fresh.items() if c == 0)

    listed = _listed()
    harmless: list[str] = []
    unlisted: list[tuple[str, str]] = []
    for name in survivors:
        line = _mutated_line(name, results[name][1])
        entry = listed.get(name)
        if entry is not None and entry.line == line:
            harmless.append(name)
        else:
            unlisted.append((name, line))
    for name, line in unlisted:
        note = " (listed with another line: renumbered?)" if name in listed else ""
        print(f"  SURVIVED, not listed{note}: `{name}` `{line}`")
    for name in sorted(set(listed) - set(survivors)):
        print(f"  listed but no longer survives (drop its line): {name}")
    minutes = (time.perf_counter() - started) / 60
    print(f"done in {minutes:.1f} min; {len(unlisted)} survivors not listed")
    tail = f"; {len(unlisted)} not listed" if unlisted else ""
    print(
        f"mutation score: {100 * len(killed) / total:.1f}% ({len(killed)}/{total}); "
        f"{len(harmless)} listed as harmless in {SURVIVORS_DOC}{tail}"
    )
    sys.exit(1 if unlisted else 0)


if __name__ == "__main__":
    main()
