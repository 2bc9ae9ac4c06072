#!/usr/bin/env python3
"""Summarise a callgrind profile of the policy chain per session.

Usage: footprint.py CALLGRIND_OUT

The profile is of `cargo bench --bench policy -- shipped_chain/<case>`
under `valgrind --tool=callgrind --cache-sim=yes` with collection toggled
on inside the chain's session calls (see bench/footprint.sh). Sessions are
counted as the calls of `Chain::session`.

Printed per session: instructions, and the distinct cache lines of code
(I-lines) and data (D-lines) that missed a simulated last-level cache
small enough (bench/footprint.sh: 2 MiB) to miss everything a session
touches after the bench evicted the caches. That footprint, not the
instruction count, is what a session costs in the gateway, where other
work runs between two calls of a policy.
"""

import collections
import re
import sys

# (pattern on the function name, group); first match wins. JIT code
# (the guests) has no object file and is grouped apart.
GROUPS = [
    (r"wasmtime|cranelift", "wasmtime"),
    (r"sluice::policy", "sluice policy"),
    (r"mail_parser", "mail-parser"),
    (r"tokio", "tokio"),
]


def group(obj, fn):
    if obj is None or "???" in obj:
        return "guests (JIT)"
    if "libc" in obj:
        return "libc"
    for pattern, name in GROUPS:
        if re.search(pattern, fn or ""):
            return name
    return "std and other host"


def main(path):
    names = {"fn": {}, "ob": {}}
    fn = obj = None
    events = []
    after_calls = False
    totals = collections.defaultdict(lambda: collections.Counter())
    sessions = 0
    callee = None
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("events:"):
                events = line.split()[1:]
                continue
            m = re.match(r"^(c?)(fn|ob)=\((\d+)\)(?: (.*))?$", line)
            if m:
                table = names[m.group(2)]
                if m.group(4):
                    table[m.group(3)] = m.group(4)
                value = table.get(m.group(3))
                if m.group(1):
                    if m.group(2) == "fn":
                        callee = value
                elif m.group(2) == "fn":
                    fn = value
                else:
                    obj = value
                continue
            if line.startswith("calls="):
                after_calls = True
                if callee and callee.endswith("policy::chain::Chain::session"):
                    sessions += int(line.split("=")[1].split()[0])
                continue
            if line and (line[0].isdigit() or line[0] in "+-*"):
                if after_calls:
                    # The inclusive cost of a call: counted in the callee.
                    after_calls = False
                    continue
                values = [int(x) for x in line.split()[1:]]
                counter = totals[group(obj, fn)]
                for name, v in zip(events, values):
                    counter[name] += v
    if sessions == 0:
        sys.exit(f"{path}: no session found (was collection toggled on?)")
    want = ["Ir", "ILmr", "DLmr", "DLmw"]
    missing = [e for e in want if e not in events]
    if missing:
        sys.exit(f"{path}: events {missing} missing (run with --cache-sim=yes)")
    print(f"{sessions} sessions; per session:")
    print(f"{'':22}{'instructions':>13}{'I-lines':>9}{'D-lines':>9}")
    all_ = collections.Counter()
    rows = sorted(totals.items(), key=lambda kv: -kv[1]["ILmr"])
    for name, c in rows:
        all_.update(c)
        print(
            f"{name:22}{c['Ir'] // sessions:>13}{c['ILmr'] // sessions:>9}"
            f"{(c['DLmr'] + c['DLmw']) // sessions:>9}"
        )
    print(
        f"{'total':22}{all_['Ir'] // sessions:>13}{all_['ILmr'] // sessions:>9}"
        f"{(all_['DLmr'] + all_['DLmw']) // sessions:>9}"
    )


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
