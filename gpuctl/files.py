"""Which files of a work directory travel to the machine.

Honours .gitignore (root and nested), `--exclude` patterns, and never ships secrets
(.env, cloud credentials, private keys) unless the user names them explicitly: a rented
machine's disk outlives the run and may be imaged or inspected.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

# Never uploaded unless named with --include-secret (matched against each path part).
SECRET_PATTERNS: tuple[str, ...] = (
    ".env",
    ".env.*",
    "*.pem",
    "*.key",
    "id_rsa*",
    "id_ed25519*",
    "id_ecdsa*",
    "id_dsa*",
    ".netrc",
    ".pgpass",
    "credentials",
    "credentials.json",
    ".aws",
    ".ssh",
    ".gnupg",
    ".docker",
    ".kube",
    "*.p12",
    "*.pfx",
    ".git-credentials",
    ".pypirc",
    "secrets.*",
    "*.secret",
)

# Never worth shipping: version control, environments, caches.
ALWAYS_SKIPPED: tuple[str, ...] = (
    ".git",
    ".hg",
    ".svn",
    ".venv",
    "venv",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    "node_modules",
    ".DS_Store",
    ".ipynb_checkpoints",
)


@dataclass(frozen=True)
class FileEntry:
    rel: str  # POSIX path relative to the tree root
    size: int
    mtime: float
    mode: int = 0o644

    def digest(self, root: Path) -> str:
        return file_digest(root / self.rel)


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class _Rule:
    pattern: str
    negate: bool
    dir_only: bool
    anchored: bool
    base: str  # directory (relative, POSIX) holding the .gitignore

    def matches(self, rel: str, is_dir: bool) -> bool:
        if self.dir_only and not is_dir:
            return False
        if self.base:
            if not rel.startswith(self.base + "/"):
                return False
            rel = rel[len(self.base) + 1 :]
        if self.anchored:
            return fnmatch.fnmatchcase(rel, self.pattern) or _glob_star(rel, self.pattern)
        name = rel.rsplit("/", 1)[-1]
        return fnmatch.fnmatchcase(name, self.pattern) or fnmatch.fnmatchcase(
            rel, "*/" + self.pattern
        )


def _glob_star(rel: str, pattern: str) -> bool:
    if "**" not in pattern:
        return False
    return fnmatch.fnmatchcase(rel, pattern.replace("**/", "*").replace("/**", "/*"))


def parse_ignore(lines: Iterable[str], base: str = "") -> list[_Rule]:
    rules = []
    for raw in lines:
        line = raw.rstrip("\n").rstrip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        if negate:
            line = line[1:]
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        anchored = "/" in line
        line = line.lstrip("/")
        if line:
            rules.append(_Rule(line, negate, dir_only, anchored, base))
    return rules


def _ignored(rules: Sequence[_Rule], rel: str, is_dir: bool) -> bool:
    result = False
    for rule in rules:
        if rule.matches(rel, is_dir):
            result = not rule.negate
    return result


def is_secret(rel: str, include: Sequence[str] = ()) -> bool:
    if any(fnmatch.fnmatchcase(rel, pat) for pat in include):
        return False
    return any(fnmatch.fnmatchcase(part, pat) for part in rel.split("/") for pat in SECRET_PATTERNS)


def _link_problem(real_root: str, path: str, include: Sequence[str]) -> str | None:
    """Why a symlink in the tree must not travel (None: it may, as the file it names)."""
    try:
        real = os.path.realpath(path)
    except OSError:  # /proc/1/cwd: a link that cannot even be read
        return "cannot be followed"
    if real != real_root and os.path.commonpath([real_root, real]) != real_root:
        return "points outside the work dir"
    if is_secret(os.path.relpath(real, real_root).replace(os.sep, "/"), include):
        return "points to a secret"
    return None


def walk_tree(
    root: Path,
    excludes: Sequence[str] = (),
    include_secrets: Sequence[str] = (),
    skipped: list[str] | None = None,
    most: int | None = None,
) -> list[FileEntry]:
    """Files to ship from root, sorted; symlinks to files are followed, to dirs skipped.

    A symlink that resolves outside root or to a secret never travels (a link named
    data.txt may point at ~/.aws/credentials); `skipped` collects "name (why)" for it.
    Only regular files travel: a FIFO or socket would hang the upload. With `most`, the
    walk stops (unsorted) once it has found more files than that.
    """
    root = Path(root)
    real_root = os.path.realpath(root)
    rules = parse_ignore(excludes)
    out: list[FileEntry] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root).replace(os.sep, "/")
        rel_dir = "" if rel_dir == "." else rel_dir
        gitignore = Path(dirpath) / ".gitignore"
        if gitignore.is_file():
            try:
                rules = rules + parse_ignore(
                    gitignore.read_text(errors="replace").splitlines(), rel_dir
                )
            except OSError:
                pass
        keep = []
        for d in sorted(dirnames):
            rel = f"{rel_dir}/{d}" if rel_dir else d
            if d in ALWAYS_SKIPPED:
                continue
            if os.path.islink(os.path.join(dirpath, d)):
                problem = _link_problem(real_root, os.path.join(dirpath, d), include_secrets)
                if problem and skipped is not None and not _ignored(rules, rel, True):
                    skipped.append(f"{rel} ({problem})")
                continue
            if _ignored(rules, rel, True) or is_secret(rel, include_secrets):
                continue
            keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if name in ALWAYS_SKIPPED or _ignored(rules, rel, False):
                continue
            if is_secret(rel, include_secrets):
                continue
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                problem = _link_problem(real_root, path, include_secrets)
                if problem:
                    if skipped is not None:
                        skipped.append(f"{rel} ({problem})")
                    continue
            try:
                st = os.stat(path)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode):
                continue
            out.append(FileEntry(rel, st.st_size, st.st_mtime, st.st_mode & 0o777))
            if most is not None and len(out) > most:
                return out
    return sorted(out, key=lambda e: e.rel)
