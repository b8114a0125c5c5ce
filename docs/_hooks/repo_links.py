"""mkdocs hook: pages that also read well in the repository.

The markdown under ``docs/`` (and the root files shown as pages) link to repository files with
ordinary relative paths, so the same text works on GitHub. In the site:

* ``CONTRIBUTING.md`` and ``CHANGELOG.md`` at the repository root become the pages ``contributing.md``
  and ``changelog.md``; links inside them are resolved from the root, as on GitHub;
* an image of the repository outside ``docs/`` (a plot under ``results/``) is copied into the site
  under ``_repo/`` and the link follows it;
* a link to a root file that is a page goes to that page;
* a link to any other existing file or folder of the repository goes to it on GitHub
  (``repo_url``/blob/main/PATH);
* a link to a path that does not exist is left alone, so mkdocs reports it (an error under ``--strict``).
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from urllib.parse import quote

#: repository root file -> the page it becomes
ROOT_PAGES = {"CONTRIBUTING.md": "contributing.md", "CHANGELOG.md": "changelog.md"}
IMAGES = {".png", ".svg", ".jpg", ".jpeg", ".gif", ".webp"}
COPY_PREFIX = "_repo"
BRANCH = "main"

LINK = re.compile(r"(?P<head>!?\[[^\]\n]*\]\()(?P<url>[^)\s]+)(?P<tail>(?:\s+\"[^\"]*\")?\))")
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})")


def _repo_root(config) -> Path:
    return Path(config["config_file_path"]).resolve().parent


def _outside_code(markdown: str):
    """Yield (is_code, chunk) pieces: fenced code blocks are never rewritten."""
    buf: list[str] = []
    fence = None
    for line in markdown.splitlines(keepends=True):
        m = FENCE.match(line)
        if fence is None and m:
            if buf:
                yield False, "".join(buf)
            buf, fence = [line], m.group("fence")
        elif fence is not None and m and m.group("fence").startswith(fence[0]) and len(m.group("fence")) >= len(fence):
            buf.append(line)
            yield True, "".join(buf)
            buf, fence = [], None
        else:
            buf.append(line)
    if buf:
        yield fence is not None, "".join(buf)


def _split_inline_code(text: str):
    """Yield (is_code, piece) for inline code spans, so `[x](y)` inside backticks stays literal."""
    pos = 0
    for m in re.finditer(r"(`+)(?:.|\n)*?(?<!`)\1(?!`)", text):
        if m.start() > pos:
            yield False, text[pos : m.start()]
        yield True, m.group(0)
        pos = m.end()
    if pos < len(text):
        yield False, text[pos:]


def _links(markdown: str):
    for is_code, chunk in _outside_code(markdown):
        if is_code:
            continue
        for inline, piece in _split_inline_code(chunk):
            if not inline:
                yield from LINK.finditer(piece)


def _target(url: str, source: Path, root: Path) -> tuple[Path, str] | None:
    """The repository path a relative link points to, and its #fragment; None for other links."""
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", url) or url.startswith(("#", "/")):
        return None
    path, _, frag = url.partition("#")
    if not path:
        return None
    target = (source.parent / path).resolve()
    try:
        target.relative_to(root)
    except ValueError:
        return None
    return target, frag


def _source_of(file, root: Path) -> Path | None:
    src = getattr(file, "abs_src_path", None)
    return Path(src).resolve() if src else None


def _rel_url(from_src_uri: str, to_src_uri: str) -> str:
    """Relative link between two documentation files, as mkdocs expects it in markdown."""
    start = PurePosixPath(from_src_uri).parent
    parts_from, parts_to = start.parts, PurePosixPath(to_src_uri).parts
    i = 0
    while i < len(parts_from) and i < len(parts_to) - 1 and parts_from[i] == parts_to[i]:
        i += 1
    return "/".join([".."] * (len(parts_from) - i) + list(parts_to[i:]))


def on_files(files, config, **kwargs):
    """Add the root pages and every repository image that a page links to."""
    from mkdocs.structure.files import File

    root = _repo_root(config)
    for name, page in ROOT_PAGES.items():
        if (root / name).is_file() and files.get_file_from_path(page) is None:
            files.append(File.generated(config, page, abs_src_path=str(root / name)))
    docs = Path(config["docs_dir"]).resolve()
    wanted: set[str] = set()
    for f in list(files):
        if not f.src_uri.endswith(".md"):
            continue
        source = _source_of(f, root)
        if source is None or not source.is_file():
            continue
        for m in _links(source.read_text(encoding="utf-8")):
            t = _target(m.group("url"), source, root)
            if t is None:
                continue
            target, _ = t
            if target.suffix.lower() in IMAGES and target.is_file() and docs not in target.parents:
                wanted.add(target.relative_to(root).as_posix())
    for rel in sorted(wanted):
        uri = f"{COPY_PREFIX}/{rel}"
        if files.get_file_from_path(uri) is None:
            files.append(File.generated(config, uri, abs_src_path=str(root / rel)))
    return files


def on_page_markdown(markdown, page, config, files, **kwargs):
    root = _repo_root(config)
    docs = Path(config["docs_dir"]).resolve()
    source = _source_of(page.file, root)
    if source is None:
        return markdown
    repo_url = (config.get("repo_url") or "").rstrip("/")

    def rewrite(m: re.Match) -> str:
        t = _target(m.group("url"), source, root)
        if t is None:
            return m.group(0)
        target, frag = t
        frag = f"#{frag}" if frag else ""
        rel = target.relative_to(root).as_posix()
        if docs in target.parents or target == docs:
            if docs in source.parents:  # an ordinary link between pages: mkdocs handles it
                return m.group(0)
            new = _rel_url(page.file.src_uri, target.relative_to(docs).as_posix())
        elif rel in ROOT_PAGES:
            new = _rel_url(page.file.src_uri, ROOT_PAGES[rel])
        elif target.suffix.lower() in IMAGES and target.is_file():
            new = _rel_url(page.file.src_uri, f"{COPY_PREFIX}/{rel}")
        elif target.exists() and repo_url:
            kind = "tree" if target.is_dir() else "blob"
            new = f"{repo_url}/{kind}/{BRANCH}/{quote(rel)}"
        else:
            return m.group(0)
        return m.group("head") + new + frag + m.group("tail")

    out = []
    for is_code, chunk in _outside_code(markdown):
        if is_code:
            out.append(chunk)
            continue
        for inline, piece in _split_inline_code(chunk):
            out.append(piece if inline else LINK.sub(rewrite, piece))
    return "".join(out)
