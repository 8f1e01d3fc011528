#!/usr/bin/env python3
"""Print the import edges between the crate's top-level modules and check their floors.

Reads src/**/*.rs, finds where each top-level module uses another one (`use crate::x`,
`crate::x::` paths in code, `super::` resolved against the file's module path, `pub use`
re-exports; the binaries' `llm_proxy::x`), and prints `from -> to  (file:line, ...)`.
Items under `#[cfg(test)]` and files named `tests.rs` are left out: tests may reach anywhere.

Exits 1 when the modules' imports form a cycle, when an import runs from a lower floor to a
higher one (or between two modules of a floor whose modules stay independent, or one that
NEVER lists), or when a top-level module is missing from FLOORS below. `--report` prints the same and exits 0;
`--self-test` checks the parser on small inline sources.

    python3 scripts/floors.py [--report] [--self-test] [--root DIR]
"""

import argparse
import os
import re
import sys

# The floors, top to bottom. A module may import modules on lower floors; it may import a
# module of its own floor only when that floor says `True` (its modules build on each other);
# never one above. A name that does not exist (yet) costs nothing.
FLOORS = [
    # The binaries (src/main.rs, src/bin/): parse the command line, call cmd, map exit codes.
    ("bin", ["main"], False),
    # One module per subcommand; the only place the tools are put together.
    ("commands", ["cmd"], False),
    # What the commands drive besides the server: the load generator of `benchmark`, the mock
    # upstream of `mock-upstream` (it binds its listeners as the server does). Neither knows
    # the handlers: they speak plain HTTP.
    ("tools", ["loadgen", "mock"], False),
    # Listeners, the connection loop, dispatch to the handlers, shutdown and drain.
    ("server", ["server"], False),
    # The handlers: siblings, none imports another.
    ("handlers", ["proxy", "manage", "login"], False),
    # The request vocabulary every handler speaks and the server hands them: the worker's
    # state (it owns the per-worker services below: pools, cache shard, counters, event
    # buffer), the downstream connection and its I/O, what the local endpoints share. These
    # build on each other.
    ("vocabulary", ["worker", "downstream", "api"], True),
    # Per-worker services the request path calls: independent of each other and of the
    # handlers.
    ("services", ["cache", "events", "metrics", "upstream"], False),
    # The words of a request that the services record or return: the error table (upstream
    # returns its errors, metrics count them) and the request record, usage and cache status
    # (events and metrics take them from finish). They are data, not handlers, so they sit
    # below the services that speak them; the rest of the vocabulary sits above.
    ("words", ["error", "record"], True),
    # The foundations, which may build on each other: HTTP framing, the store (the only module
    # on LMDB), typed settings and what they are read from (the clap definitions in `cli`, the
    # provider table and the LiteLLM-style config, immutable snapshots once loaded), the
    # provider prefixes of LiteLLM-style deployments (`dialect`: a static table), the
    # blocking HTTP client `http_client` (the cold-path commands, the event sinks and the
    # OpenID Connect sign-in use it; it imports nothing of the crate), the worker threads and
    # their monoio runtimes (they know nothing of what runs on them) and the global allocator.
    (
        "base",
        ["http", "store", "settings", "cli", "providers", "dialect", "litellm_config", "http_client",
         "runtime", "alloc"],
        True,
    ),
]

# Imports the floors allow but the design does not: (from, to, why).
NEVER = [
    ("loadgen", "proxy", "the load generator measures the proxy from outside, as a client"),
]

# Modules that stand outside the library's module tree, by file: the binaries.
BINARIES = {"main.rs": "main", "bin": "main"}
# How the binaries name the library.
LIB_NAME = "llm_proxy"

# ---------------------------------------------------------------------------------------------
# Tokens


TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|::|\S")


def tokenize(text):
    """Return [(token, line)] of Rust source, without comments, strings and char literals."""
    out = []
    i, n, line = 0, len(text), 1
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    line += text[i] == "\n"
                    i += 1
        else:
            m = re.compile(r'(?:b|c)?r(#*)"').match(text, i)
            if m and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
                end = text.find('"' + m.group(1), m.end())
                end = n if end < 0 else end + 1 + len(m.group(1))
                line += text.count("\n", i, end)
                i = end
                continue
            if c == '"' or (c in "bc" and text.startswith('"', i + 1)):
                i += 2 if c != '"' else 1
                while i < n and text[i] != '"':
                    if text[i] == "\\":
                        i += 1
                    line += i < n and text[i] == "\n"
                    i += 1
                i += 1
                continue
            if c == "'" or (c == "b" and text.startswith("'", i + 1)):
                # A char literal ('a', '\n', '\u{1F600}') or a lifetime ('a, 'static).
                k = i + (2 if c == "b" else 1)
                m = re.compile(r"\\(?:u\{[0-9A-Fa-f]*\}|x[0-9A-Fa-f]{2}|.)'|[^\\']'").match(text, k)
                if m:
                    i = m.end()
                    continue
                if c == "'":
                    i += 1  # a lifetime: the name that follows is an identifier, harmless
                    continue
            m = TOKEN.match(text, i)
            if m.group(0)[0].isdigit():
                m = re.compile(r"[0-9][0-9A-Za-z_.]*").match(text, i)
            out.append((m.group(0), line))
            i = m.end()
    return out


# ---------------------------------------------------------------------------------------------
# Paths


def use_paths(toks, i):
    """Parse the use tree starting at toks[i]; return ([(segments, line)], index after `;`)."""
    paths = []

    def tree(i, prefix):
        if toks[i][0] == "{":
            i += 1
            while toks[i][0] != "}":
                i = tree(i, prefix)
                if toks[i][0] == ",":
                    i += 1
            return i + 1
        segs, line = list(prefix), toks[i][1]
        if toks[i][0] == "::":  # `use ::std::...`
            i += 1
        while True:
            tok = toks[i][0]
            if tok == "{":
                return tree(i, segs)
            if tok == "*":
                paths.append((segs, line))
                return i + 1
            segs.append(tok)
            i += 1
            if toks[i][0] == "::":
                i += 1
                continue
            if toks[i][0] == "as":
                i += 2
            paths.append((segs, line))
            return i

    i = tree(i, [])
    while toks[i][0] != ";":
        i += 1
    return paths, i + 1


def skip_item(toks, i):
    """Return the index after the item starting at toks[i] (its attributes included)."""
    while toks[i][0] == "#":  # further attributes
        i = match_close(toks, i + 1) + 1
    depth = 0
    while i < len(toks):
        tok = toks[i][0]
        if tok in "([":
            depth += 1
        elif tok in ")]":
            depth -= 1
        elif tok == "{":
            if depth == 0:
                return match_close(toks, i) + 1
            depth += 1
        elif tok == "}":
            depth -= 1
        elif tok == ";" and depth == 0:
            return i + 1
        i += 1
    return i


def match_close(toks, i):
    """toks[i] opens a bracket; return the index of the one that closes it."""
    depth = 0
    for j in range(i, len(toks)):
        tok = toks[j][0]
        if tok in "([{":
            depth += 1
        elif tok in ")]}":
            depth -= 1
            if depth == 0:
                return j
    return len(toks) - 1


def module_paths(source, module):
    """All module paths `source` names, as [(absolute segments or None, line)].

    `module` is the file's module path (['proxy', 'plan'] for src/proxy/plan.rs, [] for
    lib.rs, None for a binary). Paths that stay inside the file's own module or name
    another crate come back as None.
    """
    toks = tokenize(source) + [(";", 0)] * 4
    found = []
    mods = []  # inline `mod name {`: (name, index of its closing brace)
    i = 0
    while i < len(toks) - 4:
        while mods and i > mods[-1][1]:
            mods.pop()
        here = None if module is None else module + [m for m, _ in mods]
        tok = toks[i][0]
        if tok == "#" and [t for t, _ in toks[i + 1 : i + 7]] == ["[", "cfg", "(", "test", ")", "]"]:
            i = skip_item(toks, i + 7)
            continue
        if tok == "#" and toks[i + 1][0] in ("[", "!"):
            i = match_close(toks, i + 1 if toks[i + 1][0] == "[" else i + 2) + 1
            continue
        if tok == "mod" and toks[i + 2][0] == "{":
            mods.append((toks[i + 1][0], match_close(toks, i + 2)))
            i += 3
            continue
        is_use = tok == "use" and (i == 0 or toks[i - 1][0] != "::")
        if is_use and (toks[i + 1][0] in ("::", "{") or toks[i + 1][0].isidentifier()):
            paths, i = use_paths(toks, i + 1)
            found += [(resolve(segs, here), line) for segs, line in paths]
            continue
        if tok == "in" and toks[i - 1][0] == "(":  # `pub(in crate::x)`: a visibility
            i += 1
            while toks[i][0] in ("::",) or toks[i][0].isidentifier():
                i += 1
            continue
        starts_path = tok in ("crate", "super", "self", LIB_NAME) and toks[i + 1][0] == "::"
        if starts_path and toks[i - 1][0] != "::":
            line, segs = toks[i][1], []
            while toks[i][0].isidentifier() and toks[i + 1][0] == "::":
                segs.append(toks[i][0])
                i += 2
            if toks[i][0].isidentifier():
                segs.append(toks[i][0])
            found.append((resolve(segs, here), line))
            continue
        i += 1
    return found


def resolve(segs, here):
    """The absolute path of `segs` written in module `here`, or None if it is not this crate's."""
    if here is None:  # a binary: only `llm_proxy::...` names the library
        return segs[1:] if segs and segs[0] == LIB_NAME else None
    if not segs:
        return None
    if segs[0] == "crate":
        return segs[1:]
    if segs[0] in ("self", "super"):
        base = list(here)
        if segs[0] == "self":
            segs = segs[1:]
        while segs and segs[0] == "super":
            base, segs = base[:-1], segs[1:]
        return base + segs
    # A bare name: a child of this module, or another crate (or, at the root, a module).
    return segs if not here else None


# ---------------------------------------------------------------------------------------------
# The crate


def file_module(rel):
    """src-relative file path -> its module path, or None for a binary."""
    parts = rel.split(os.sep)
    if parts[0] in BINARIES:
        return None
    if parts == ["lib.rs"]:
        return []
    parts[-1] = parts[-1][:-3]
    if parts[-1] == "mod":
        parts.pop()
    return parts


def top_modules(lib_source):
    """The top-level modules lib.rs declares."""
    toks = [t for t, _ in tokenize(lib_source)]
    return {toks[k + 1] for k, t in enumerate(toks[:-2]) if t == "mod" and toks[k + 2] == ";"}


def collect(root):
    """{(from, to): [(file, line)]} over src/, and the set of top-level modules."""
    src = os.path.join(root, "src")
    with open(os.path.join(src, "lib.rs"), encoding="utf-8") as f:
        tops = top_modules(f.read())
    edges = {}
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.endswith(".rs") or name == "tests.rs":
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, src)
            module = file_module(rel)
            owner = BINARIES[rel.split(os.sep)[0]] if module is None else (module or [None])[0]
            if owner is None:
                continue  # lib.rs declares modules, it imports nothing
            with open(path, encoding="utf-8") as f:
                found = module_paths(f.read(), module)
            for target, line in found:
                if not target or target[0] not in tops or target[0] == owner:
                    continue
                edges.setdefault((owner, target[0]), []).append(
                    (os.path.join("src", rel), line)
                )
    return edges, tops


def cycles(edges):
    """The strongly connected components with more than one module (Tarjan)."""
    graph = {}
    for a, b in edges:
        graph.setdefault(a, []).append(b)
        graph.setdefault(b, [])
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def cycle_path(edges, comp):
    """One closed walk through a cycle inside `comp`, as [a, b, ..., a]."""
    inside = set(comp)
    start = comp[0]
    # Breadth-first from start back to start, inside the component.
    prev, frontier = {}, [start]
    while frontier:
        nxt = []
        for a in frontier:
            for x, b in sorted(edges):
                if x == a and b in inside and b not in prev:
                    prev[b] = a
                    nxt.append(b)
        if start in prev:
            break
        frontier = nxt
    walk, v = [start], prev[start]
    while v != start:
        walk.append(v)
        v = prev[v]
    return [start] + walk[::-1][:-1] + [start] if len(walk) > 1 else [start, start]


def violations(edges, tops):
    floor = {}
    for k, (name, mods, siblings) in enumerate(FLOORS):
        for m in mods:
            floor[m] = (k, name, siblings)
    out = []
    for m in sorted((tops | {"main"}) - set(floor)):
        out.append(f"{m}: not in FLOORS (scripts/floors.py); give it a floor")
    for (a, b), where in sorted(edges.items()):
        if a not in floor or b not in floor:
            continue
        (fa, na, siblings), (fb, nb, _) = floor[a], floor[b]
        if fb < fa:
            out.append(f"{a} -> {b}: up from {na} to {nb}  ({places(where)})")
        elif fa == fb and not siblings:
            out.append(f"{a} -> {b}: between siblings on {na}  ({places(where)})")
    for a, b, why in NEVER:
        if (a, b) in edges:
            out.append(f"{a} -> {b}: never ({why})  ({places(edges[(a, b)])})")
    return out


def places(where):
    return ", ".join(dict.fromkeys(f"{f}:{line}" for f, line in where))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--report", action="store_true", help="print, and exit 0 anyway")
    parser.add_argument("--self-test", action="store_true", help="test the parser and exit")
    here = os.path.dirname(os.path.abspath(__file__))
    parser.add_argument("--root", default=os.path.dirname(here), help="the crate's directory")
    args = parser.parse_args()
    if args.self_test:
        return self_test()
    edges, tops = collect(args.root)
    print("Edges between top-level modules:")
    for (a, b), where in sorted(edges.items()):
        print(f"  {a} -> {b}  ({places(where)})")
    found = cycles(edges)
    bad = violations(edges, tops)
    for comp in found:
        print(f"Cycle among {', '.join(comp)}: {' -> '.join(cycle_path(edges, comp))}")
        for a, b in sorted(edges):
            if a < b and a in comp and (b, a) in edges:
                print(f"  {a} <-> {b}")
    for v in bad:
        print(f"Violation: {v}")
    if not found and not bad:
        print("Floors hold: no cycle, no import upwards.")
        return 0
    print(f"{len(found)} cycle(s), {len(bad)} violation(s).")
    return 0 if args.report else 1


# ---------------------------------------------------------------------------------------------
# Self-test


def self_test():
    def targets(source, module=("proxy", "auth")):
        found = module_paths(source, None if module is None else list(module))
        return [(t[0] if t else None, line) for t, line in found]

    cases = [
        ("use crate::server::worker::Worker;", [("server", 1)]),
        ("pub use crate::events::Event;", [("events", 1)]),
        ("use crate::{\n  server::Drain,\n  store::{Store, ledger},\n  http,\n};",
         [("server", 2), ("store", 3), ("store", 3), ("http", 4)]),
        ("use crate::metrics as m;", [("metrics", 1)]),
        ("use crate::cache::*;", [("cache", 1)]),
        ("fn f() { crate::metrics::record(1); }", [("metrics", 1)]),
        ("let x = crate::http::X::new();", [("http", 1)]),
        ("use super::keys;", [("proxy", 1)]),
        ("use super::super::store::Store;", [("store", 1)]),
        ("fn f() { super::super::events::push(); }", [("events", 1)]),
        ("use self::inner::X;", [("proxy", 1)]),
        ("use serde::Deserialize;\nuse std::{io, fmt};", [(None, 1), (None, 2), (None, 2)]),
        ("#[cfg(test)]\nmod tests {\n  use crate::server::X;\n}\nuse crate::store::Y;",
         [("store", 5)]),
        ("#[cfg(test)]\nuse crate::server::X;\nuse crate::store::Y;", [("store", 3)]),
        ("#[cfg(test)]\n#[allow(unused)]\nfn t() { crate::server::x(); }\ncrate::http::y();",
         [("http", 4)]),
        ("#[cfg(test)]\nmod tests;\nuse crate::store::Y;", [("store", 3)]),
        ("// use crate::server::X;\n/* crate::login::y /* nested */ */\nuse crate::store::Y;",
         [("store", 3)]),
        ('let s = "use crate::server::X;";\nlet r = r#"crate::login::y "quoted" "#;\nuse crate::store::Y;',
         [("store", 3)]),
        ("let c = '\"'; let l: &'static str = \"\\\"\"; use crate::store::Y;", [("store", 1)]),
        ("fn f<'a>(x: &'a str) -> char { '{' }\nuse crate::store::Y;", [("store", 2)]),
        ("pub(in crate::proxy) fn f() {}\npub(crate) fn g() {}\npub(super) fn h() {}", []),
        ("mod inner {\n  use super::super::super::login::X;\n}\nuse super::y;",
         [("login", 2), ("proxy", 4)]),
        ("fn f() -> impl Sized + use<'a> { crate::store::x() }", [("store", 1)]),
        ("x.use_y(crate::upstream::Pool::new());", [("upstream", 1)]),
        ("$crate::metrics::inc!();", [("metrics", 1)]),
    ]
    failures = 0
    for source, want in cases:
        got = targets(source)
        if got != want:
            failures += 1
            print(f"FAIL {source!r}\n  want {want}\n  got  {got}")
    # At the root and in binaries.
    for source, module, want in [
        ("use proxy::X;", [], [("proxy", 1)]),
        ("use llm_proxy::cli::Cli;\nuse llm_proxy::cmd;", None, [("cli", 1), ("cmd", 2)]),
        ("use clap::Parser;\nfn main() { llm_proxy::alloc::x(); }", None, [(None, 1), ("alloc", 2)]),
        ("use super::Y;", ["server"], [("Y", 1)]),
    ]:
        got = targets(source, module)
        if got != want:
            failures += 1
            print(f"FAIL {source!r} in {module}\n  want {want}\n  got  {got}")
    if file_module(os.path.join("proxy", "mod.rs")) != ["proxy"] or file_module(
        os.path.join("proxy", "auth.rs")
    ) != ["proxy", "auth"] or file_module("main.rs") is not None:
        failures += 1
        print("FAIL file_module")
    if top_modules("//! map\npub mod a;\nmod b;\n#[cfg(test)]\nmod c {}\n") != {"a", "b"}:
        failures += 1
        print("FAIL top_modules")
    e = {("a", "b"): [], ("b", "c"): [], ("c", "a"): [], ("c", "d"): [], ("d", "e"): []}
    if cycles(e) != [["a", "b", "c"]] or cycle_path(e, ["a", "b", "c"]) != ["a", "b", "c", "a"]:
        failures += 1
        print("FAIL cycles", cycles(e))
    w = [("src/x.rs", 1)]
    e = {("proxy", "server"): w, ("manage", "login"): w, ("server", "proxy"): w,
         ("settings", "store"): w, ("loadgen", "proxy"): w}
    got = [v.split(":")[0] for v in violations(e, {"proxy", "server", "zzz"})]
    if got != ["zzz", "manage -> login", "proxy -> server", "loadgen -> proxy"]:
        failures += 1
        print("FAIL violations", got)
    if failures:
        print(f"self-test: {failures} failure(s)")
        return 1
    print(f"self-test: {len(cases) + 8} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
