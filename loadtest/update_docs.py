#!/usr/bin/env python3
"""Put a generated Markdown section into docs/benchmarks.md.

Used by loadtest/compare_nginx.sh.

    update_docs.py DOCS.md SECTION.md     replace or insert the section
    update_docs.py --remove DOCS.md       remove it

The section lives between the lines `<!-- loadtest:begin -->` and
`<!-- loadtest:end -->`.  If the markers are there, everything between them
is replaced; if not, the section is inserted before the first `## ` heading
(after the file's introduction), or appended when there is none.  Nothing
outside the markers is changed.  The file is replaced atomically.
"""

import os
import re
import sys
import tempfile

BEGIN = "<!-- loadtest:begin -->"
END = "<!-- loadtest:end -->"


def splice(doc, section):
    begin = doc.find(BEGIN)
    end = doc.find(END)
    if (begin == -1) != (end == -1) or (begin != -1 and end < begin):
        raise SystemExit(f"update_docs.py: found only one of {BEGIN} / {END}, or in the wrong order; fix the file by hand")
    block = "" if section is None else f"{BEGIN}\n{section.strip()}\n{END}\n\n"
    if begin != -1:
        rest = doc[end + len(END):].lstrip("\n")
        return doc[:begin] + block + rest
    if section is None:
        return doc
    heading = re.search(r"^## ", doc, re.M)
    if heading is None:
        return doc.rstrip("\n") + "\n\n" + block
    return doc[: heading.start()] + block + doc[heading.start():]


def main(argv):
    if len(argv) == 3 and argv[1] == "--remove":
        path, section = argv[2], None
    elif len(argv) == 3:
        path = argv[1]
        with open(argv[2], encoding="utf-8") as f:
            section = f.read()
    else:
        print(__doc__, file=sys.stderr)
        return 2
    with open(path, encoding="utf-8") as f:
        doc = f.read()
    new = splice(doc, section)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".benchmarks.", suffix=".md")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(new)
        os.chmod(tmp, os.stat(path).st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
