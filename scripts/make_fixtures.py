#!/usr/bin/env python3
"""Regenerates every reference fixture under tests/fixtures/ from PyTorch,
open_clip and transformers. The one entry point: it checks the installed
versions against scripts/requirements-fixtures.txt (the outputs are only
reproducible with those), then runs each generator that exists:

  scripts/fixtures_model.py      -> tests/fixtures/parity/   (tiny CLIPs, grads, training trace, HF copy)
  scripts/fixtures_tokenizer.py  -> tokenizer cases
  scripts/fixtures_images.py     -> tests/fixtures/images/   (decode and transform cases)
  scripts/fixtures_affinity.py   -> tests/fixtures/affinity/ (TinyCLIP's loss and its gradients)
  scripts/fixtures_regular.py    -> tests/fixtures/regular/  (an open_clip-regular pruned student
                                    converted by tinyclip, loaded by open_clip and transformers;
                                    needs a build: build/tinyclip and its tests)
  scripts/fixtures_breadth.py    -> tests/fixtures/breadth/  (ResNet towers, head widths, big configs)

Usage (in a venv outside the repository, see requirements-fixtures.txt):
  /opt/tcvenv/bin/python scripts/make_fixtures.py [--only model,tokenizer,images,regular]
      [--allow-version-mismatch]
"""
import argparse
import os
import re
import subprocess
import sys
from importlib import metadata

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
GENERATORS = ["model", "tokenizer", "images", "affinity", "regular", "breadth"]


def check_versions(path):
    """returns a list of 'package: installed X, pinned Y' mismatches"""
    bad = []
    with open(path) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line)
            if not m:
                continue
            name, pinned = m.groups()
            try:
                have = metadata.version(name)
            except metadata.PackageNotFoundError:
                bad.append(f"{name}: not installed, pinned {pinned}")
                continue
            # local build tags (torch 2.15.0+cpu / +cu132) are the same release
            if have.split("+", 1)[0] != pinned:
                bad.append(f"{name}: installed {have}, pinned {pinned}")
    return bad


def main():
    ap = argparse.ArgumentParser(description="regenerate tests/fixtures/")
    ap.add_argument("--only", default=",".join(GENERATORS),
                    help="comma-separated subset of: " + ", ".join(GENERATORS))
    ap.add_argument("--allow-version-mismatch", action="store_true",
                    help="run even when installed packages differ from the pins")
    args = ap.parse_args()

    wanted = [g.strip() for g in args.only.split(",") if g.strip()]
    for g in wanted:
        if g not in GENERATORS:
            ap.error(f"unknown generator '{g}'")

    bad = check_versions(os.path.join(HERE, "requirements-fixtures.txt"))
    if bad:
        print("make_fixtures: installed packages differ from scripts/requirements-fixtures.txt:",
              file=sys.stderr)
        for b in bad:
            print("  " + b, file=sys.stderr)
        if not args.allow_version_mismatch:
            print("make_fixtures: install the pinned versions, or pass --allow-version-mismatch "
                  "and update the pins", file=sys.stderr)
            return 1

    env = dict(os.environ, PYTHONHASHSEED="0")
    ran = 0
    for g in wanted:
        script = os.path.join(HERE, f"fixtures_{g}.py")
        if not os.path.exists(script):
            print(f"make_fixtures: {os.path.relpath(script, ROOT)} does not exist yet, skipped")
            continue
        print(f"make_fixtures: running {os.path.relpath(script, ROOT)}", flush=True)
        r = subprocess.run([sys.executable, script], cwd=ROOT, env=env)
        if r.returncode != 0:
            print(f"make_fixtures: {os.path.relpath(script, ROOT)} failed (exit {r.returncode})",
                  file=sys.stderr)
            return 1
        ran += 1
    print(f"make_fixtures: {ran} generator(s) ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())
