"""Before and after: ``bench/stage_speed.py`` of an earlier commit and of this tree, alternated, on one machine.

A speed change is judged by the ratio of two runs; on a shared machine two runs minutes apart see different
loads, so the trees take turns (base, this tree, base, this tree, ...) and each figure is the median over the
rounds. The base commit is checked out into a temporary git worktree and run with its own ``stage_speed.py``
(``PYTHONPATH`` points at it), on the same random features, so both trees do the same work. The last line is one
JSON object: per figure the base and this tree's medians and base / this tree (above 1: this tree is faster).

    python bench/ab_speed.py --base d3cac74 --rounds 2 -- --n 6000 --spec-size 32 --batch-size 128 --factor 16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIGURES = ("s1_epoch_s", "s2_epoch_s", "s3_epoch_s", "s3_recompute_epoch_s", "student_epoch_s", "s3_setup_s")


def run(tree: Path, features: Path | None, workdir: Path, args: list[str]) -> dict:
    command = [sys.executable, str(tree / "bench" / "stage_speed.py"), *args, "--workdir", str(workdir)]
    if features is not None:
        command += ["--features", str(features)]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(command, env=env, cwd=tree, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{tree}: stage_speed failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the earlier commit (any git revision)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("speed_args", nargs=argparse.REMAINDER, help="-- then stage_speed.py's arguments")
    args = parser.parse_args()
    speed_args = [a for a in args.speed_args if a != "--"]
    scratch = Path(tempfile.mkdtemp(prefix="ab_speed-"))
    base = scratch / "base"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(base), args.base], check=True)
    results: dict[str, list[dict]] = {"base": [], "head": []}
    features = None
    try:
        for r in range(args.rounds):
            for name, tree in (("base", base), ("head", REPO)):
                out = run(tree, features, scratch / f"{name}-{r}", speed_args)
                features = features or scratch / f"{name}-{r}" / "features.h5"  # the first run's, for all
                results[name].append(out)
                print(f"round {r + 1} {name}: " + ", ".join(f"{k} {out.get(k)}" for k in FIGURES), file=sys.stderr)
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], check=False)
    summary = {"base": args.base, "rounds": args.rounds, "device": results["head"][0]["device"], "figures": {}}
    print(f"\n{'figure':<24}{'base':>10}{'this tree':>11}{'base/this':>11}")
    for key in FIGURES:
        a = [x[key] for x in results["base"] if key in x]
        b = [x[key] for x in results["head"] if key in x]
        if not a or not b:
            continue
        ma, mb = statistics.median(a), statistics.median(b)
        summary["figures"][key] = {"base": ma, "this": mb, "speedup": round(ma / mb, 2)}
        print(f"{key:<24}{ma:>10.3f}{mb:>11.3f}{ma / mb:>11.2f}")
    head_ratio = [x.get("s3_over_student_interleaved") for x in results["head"]]
    summary["s3_over_student_interleaved"] = head_ratio
    print(f"this tree's S3 / student, interleaved epochs: {head_ratio}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
