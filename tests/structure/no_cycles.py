#!/usr/bin/python3
"""No two source files call each other (the house rule), nor do longer
rings of them: the call graph between the daemon's object files, read
from their symbol tables (nm), must be acyclic.

    no_cycles.py OBJECT...      exit 0, or 1 naming each cycle
                                (an argument may be a ;-separated list)
"""

import collections
import os
import subprocess
import sys


def graph(objects):
    defined, used = {}, collections.defaultdict(set)
    for o in objects:
        name = os.path.basename(o).removesuffix(".o")
        out = subprocess.run(["nm", o], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] in "TDBR":
                defined[parts[2]] = name
            elif len(parts) == 2 and parts[0] == "U":
                used[name].add(parts[1])
    edges = collections.defaultdict(set)
    for f, symbols in used.items():
        for s in symbols:
            if s in defined and defined[s] != f:
                edges[f].add(defined[s])
    return edges


def cycles(edges):
    found, state = [], {}

    def visit(u, path):
        state[u] = "open"
        path.append(u)
        for v in sorted(edges.get(u, ())):
            if state.get(v) == "open":
                found.append(path[path.index(v):] + [v])
            elif v not in state:
                visit(v, path)
        path.pop()
        state[u] = "done"

    for u in sorted(edges):
        if u not in state:
            visit(u, [])
    return found


def main():
    # CMake passes a target's objects as one ;-separated list.
    objects = [o for arg in sys.argv[1:] for o in arg.split(";") if o]
    if not objects:
        print("no_cycles.py: no object files given", file=sys.stderr)
        return 64
    found = cycles(graph(objects))
    for c in found:
        print("call cycle: " + " -> ".join(c))
    print(f"{len(objects)} object files, {len(found)} cycle(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
