#!/usr/bin/env python3
"""Fails when a `§N` or `§N.M` cited anywhere in the repository has no section in docs/.

Code and docs cite the protocol by section number. A section is defined by a numbered
heading in docs/*.md (`## 7. Delivery guarantees`, `### 7.3 …`); inside section N, a
top-level numbered list item `3.` defines N.3. Run by scripts/test.sh.
"""
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
REFERENCE = re.compile(r"§(\d+)(?:\.(\d+))?")
SECTION = re.compile(r"^##\s+(\d+)\.\s")
SUBSECTION = re.compile(r"^###\s+(\d+)\.(\d+)\s")
ITEM = re.compile(r"^(\d+)\.\s")


def defined_sections():
    defined = set()
    for doc in sorted((ROOT / "docs").glob("*.md")):
        current = None
        for line in doc.read_text(encoding="utf-8").splitlines():
            if line.startswith("## "):
                match = SECTION.match(line)
                current = match.group(1) if match else None
                if current:
                    defined.add(current)
            elif (match := SUBSECTION.match(line)) is not None:
                defined.add(f"{match.group(1)}.{match.group(2)}")
            elif current and (match := ITEM.match(line)) is not None:
                defined.add(f"{current}.{match.group(1)}")
    return defined


def repository_files():
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.splitlines()
    return [ROOT / name for name in listed if (ROOT / name).is_file()]


def main():
    defined = defined_sections()
    unresolved = []
    for path in repository_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            for match in REFERENCE.finditer(line):
                section = match.group(1) + (f".{match.group(2)}" if match.group(2) else "")
                if section not in defined:
                    unresolved.append(f"{path.relative_to(ROOT)}:{number}: §{section}")
    if unresolved:
        print("check-refs: these § references have no numbered section in docs/:", file=sys.stderr)
        print("\n".join(unresolved), file=sys.stderr)
        return 1
    print(f"check-refs: every § reference resolves ({len(defined)} sections in docs/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
