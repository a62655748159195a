"""How fast the code reader cuts a large tree, and whether its memory grows with the tree.

The tree is the virtual environment's ``site-packages`` (code nobody here wrote: Python, with
some C, C++ and JavaScript). Reported, for a tenth of its top-level packages and for all of them,
each in a fresh process: files and units (functions, methods, classes) per second on one core,
the skip counts, and peak memory (VmHWM); goals: at least 1,000 functions a second, and peak
memory within 1.2x from the small tree to the whole one.

    .venv/bin/python bench/code_reader.py --json bench/results/code_reader.json
    .venv/bin/python bench/code_reader.py --quick      # a tenth and a fifth of the packages

Run it alone: on 2 shared cores any other busy process distorts the timings.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys, time
from collections import Counter
sys.path.insert(0, {root!r})
from pipeline.code.grammars import GRAMMARS, parser_and_query
from pipeline.readers.code import iter_code_units
for grammar in GRAMMARS:  # every grammar loaded first: a small tree must not look lighter for using fewer
    parser_and_query(grammar.name)
counts, kinds = Counter(), Counter()
start = time.perf_counter()
for root in {roots!r}:
    for unit in iter_code_units(root, counts):
        kinds[unit.kind] += 1
seconds = time.perf_counter() - start
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({{"seconds": seconds, "counts": counts, "kinds": kinds, "peak_rss": peak}}))
"""


def measure(roots: list[Path]) -> dict:
    script = CHILD.format(root=str(ROOT), roots=[str(r) for r in roots])
    one_core = ["taskset", "-c", "0"] if shutil.which("taskset") else []
    done = subprocess.run([*one_core, sys.executable, "-c", script], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    units = result["counts"].get("code_units", 0)
    functions = result["kinds"].get("function", 0) + result["kinds"].get("method", 0)
    result["units_per_second"] = units / result["seconds"]
    result["functions_per_second"] = functions / result["seconds"]
    result["files_per_second"] = result["counts"].get("code_files", 0) / result["seconds"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth and a fifth of the packages")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    site = Path(sysconfig.get_paths()["purelib"])
    packages = sorted(
        p for p in site.iterdir() if p.is_dir() and not p.name.endswith((".dist-info", ".libs"))
    )
    shares = (10, 5) if args.quick else (10, 1)
    figures: dict = {"tree": str(site), "packages": len(packages), "runs": []}
    # the tenth read once and ten times over: the same largest file, ten times the units
    plans = [(f"1/{shares[0]}", packages[:: shares[0]]), (f"1/{shares[0]} x10", packages[:: shares[0]] * 10)]
    plans += [(f"1/{share}", packages[::share]) for share in shares[1:]]
    for share, chosen in plans:
        result = measure(chosen)
        counts = result["counts"]
        result["share"] = share
        result["packages"] = len(chosen)
        figures["runs"].append(result)
        print(
            f"{share} of site-packages ({len(chosen)} packages): {counts.get('code_files', 0)} files, "
            f"{counts.get('code_units', 0)} units in {result['seconds']:.1f} s: "
            f"{result['functions_per_second']:,.0f} functions/s, {result['files_per_second']:,.0f} files/s; "
            f"peak {result['peak_rss'] / 2**20:.0f} MiB; skipped: "
            + ", ".join(
                f"{k.removeprefix('skipped_')} {v}"
                for k, v in sorted(counts.items())
                if k.startswith("skipped")
            )
        )
    small, repeated, large = figures["runs"]
    figures["peak_rss_ratio_repeated"] = repeated["peak_rss"] / small["peak_rss"]
    figures["peak_rss_ratio"] = large["peak_rss"] / small["peak_rss"]
    print(
        f"peak memory over the tenth: read ten times {figures['peak_rss_ratio_repeated']:.3f}x, "
        f"the whole tree {figures['peak_rss_ratio']:.3f}x"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
