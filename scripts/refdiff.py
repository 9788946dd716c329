#!/usr/bin/env python3
"""refdiff.py OLD NEW: compare two reference-values directories (for example
reference-values/ at two commits) and fail on any difference other than
what the guest programs (initd, agent) drive. Use it to show that a change to
guest code changed nothing else:

    git worktree add /tmp/old HEAD~1 && python3 scripts/refdiff.py /tmp/old/reference-values reference-values

The allowed differences: the initrd's digests and size, RTMR1 (QEMU writes
the initrd size into the kernel's setup header, which RTMR1's kernel event
covers), RTMR2, the kernel event of RTMR1 and the initrd event of RTMR2, and
those values in the exports. Exit status: 0 when only those differ."""
import base64, json, os, sys

ALLOWED_REGS = {"rtmr1", "rtmr2", "rtmr_1", "rtmr_2"}

def walk(a, b, path, out):
    if type(a) != type(b):
        out.append((path, a, b)); return
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append((path + [k], a.get(k), b.get(k))); continue
            walk(a[k], b[k], path + [k], out)
    elif isinstance(a, list):
        if len(a) != len(b):
            out.append((path, len(a), len(b))); return
        for i, (x, y) in enumerate(zip(a, b)):
            walk(x, y, path + [i], out)
    elif a != b:
        if isinstance(a, str) and path and path[-1] == "payload":
            try:
                return walk(json.loads(base64.b64decode(a)), json.loads(base64.b64decode(b)), path + ["<b64>"], out)
            except Exception:
                pass
        out.append((path, a, b))

def allowed(doc, path):
    p = [str(x) for x in path]
    if any(x in ALLOWED_REGS for x in p):
        return True
    if len(path) >= 3 and path[0] == "artifacts" and doc["artifacts"][path[1]].get("name") == "initrd.img":
        return True
    if len(path) >= 4 and path[0] == "events" and path[1] in ("rtmr1", "rtmr2"):
        return True
    # checkconfig: rtmrs list index 1 and 2
    if "rtmrs" in p and p[-1] in ("1", "2"):
        return True
    # flashbots: measurements list entries for rtmr1/rtmr2 (index "1"/"2" keyed)
    if "measurements" in p:
        return any(x in ("2", "3") for x in p)  # flashbots: 0 MRTD, 1..4 RTMR0..3
    return False

def files(d):
    if os.path.isfile(os.path.join(d, "reference-values.json")):
        return {"reference-values.json": os.path.join(d, "reference-values.json")}
    return {f: os.path.join(d, f) for f in sorted(os.listdir(d))}

base, new = files(sys.argv[1]), files(sys.argv[2])
bad = 0
for name in sorted(set(base) | set(new)):
    if name not in base or name not in new:
        print(f"UNEXPECTED: {name} only in one side"); bad += 1; continue
    a, b = json.load(open(base[name])), json.load(open(new[name]))
    diffs = []
    walk(a, b, [], diffs)
    for path, x, y in diffs:
        ok = allowed(a, path)
        if not ok:
            bad += 1
        print(f"{'expected  ' if ok else 'UNEXPECTED'} {name}: {'/'.join(map(str, path))}: {str(x)[:40]} -> {str(y)[:40]}")
print("refdiff: only guest-program-driven values differ" if not bad else f"refdiff: {bad} difference(s) not driven by the guest programs")
sys.exit(1 if bad else 0)
