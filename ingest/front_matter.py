"""The leading metadata block of a text file: YAML (``---``) or TOML (``+++``) front matter, read
without a YAML or TOML parser.

Only flat ``key: value`` / ``key = value`` lines are read: that is where static-site generators and
note apps put a page's date and title. Lists, nested tables and continuation lines are skipped, so
a block that is richer than that still yields its simple keys instead of failing the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# opening line -> (closing fence, key/value line)
_STYLES = {
    "---": (re.compile(r"(?:---|\.\.\.)[ \t]*"), re.compile(r"([A-Za-z_][\w-]*)[ \t]*:[ \t]*(.*)")),
    "+++": (re.compile(r"\+\+\+[ \t]*"), re.compile(r"([A-Za-z_][\w-]*)[ \t]*=[ \t]*(.*)")),
}
_TOML_TABLE = re.compile(r"\[")  # [table] or [[array]]: the keys after it are not top-level
_COMMENT = re.compile(r"(?:^|[ \t])#")  # '#' opens a comment at the start or after a blank only


@dataclass
class FrontMatter:
    """The ``key: value`` lines of a leading block, with where each key sat (1-based)."""

    values: dict[str, str] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    body_start_line: int = 1  # first line after the closing fence
    unclosed: bool = False  # an opening fence and key lines but no closing fence: read as text


def split_front_matter(text: str) -> tuple[FrontMatter, str]:
    """(front matter, body). Without a closing fence there is no front matter: the whole text is
    the body (a leading ``---`` may be a Markdown rule), with ``unclosed`` set when key lines
    followed the opening fence, so the caller can say why the date was not read."""
    lines = text.split("\n")
    style = _STYLES.get(lines[0].rstrip())
    if style is None:
        return FrontMatter(), text
    fence, key_value = style
    for end in range(1, len(lines)):
        if fence.fullmatch(lines[end]):
            break
    else:
        return FrontMatter(unclosed=len(lines) > 1 and key_value.fullmatch(lines[1].rstrip()) is not None), text
    fm = FrontMatter(body_start_line=end + 2)
    for i in range(1, end):
        if lines[0].startswith("+") and _TOML_TABLE.match(lines[i]):
            break
        m = key_value.fullmatch(lines[i].rstrip())
        if m is None or lines[i][:1].isspace():
            continue
        key = m.group(1).lower()
        fm.values[key] = scalar(m.group(2))
        fm.lines[key] = i + 1
    return fm, "\n".join(lines[end + 1:])


def scalar(raw: str) -> str:
    """A value as written: quotes removed, a trailing ``# comment`` dropped (outside quotes only)."""
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        return raw[1:-1]
    if raw[:1] in ("'", '"'):
        end = raw.find(raw[0], 1)
        if end > 0 and _COMMENT.match(raw[end + 1:].lstrip(" \t") or "#"):
            return raw[1:end]
    return _COMMENT.split(raw, 1)[0].strip()
