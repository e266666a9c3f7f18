"""Text <-> Atlassian Document Format (ADF), the JSON rich text of Jira Cloud REST v3.

``text_to_adf`` turns the markdown-ish text mwai writes (paragraphs, ``- ``
bullets, ``1. `` ordered lists, ``## `` headings, fenced code blocks, inline
`code`, **bold**, links) into an ADF ``doc``. ``adf_to_text`` turns whatever
Jira sends back into plain text / markdown for prompts. It never raises on odd
input: unknown node types keep the text they carry, malformed parts are
skipped and nesting deeper than ``MAX_DEPTH`` is cut off (documents come from
people and other apps, not from us).

Both are pure functions.
"""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

MAX_DEPTH = 48

_FENCE_RE = re.compile(r"^\s*```+\s*([\w+#.-]*)\s*$")
_HEADING_RE = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_BULLET_RE = re.compile(r"^\s*[-*+]\s+(.*)$")
_ORDERED_RE = re.compile(r"^\s*(\d{1,9})[.)]\s+(.*)$")
_RULE_RE = re.compile(r"^\s*(?:-{3,}|\*{3,}|_{3,})\s*$")
_QUOTE_RE = re.compile(r"^\s*>\s?(.*)$")
_INLINE_RE = re.compile(
    r"`(?P<code>[^`\n]+)`"
    r"|\*\*(?P<bold>[^*\n](?:.*?[^*\n])?)\*\*"
    r"|\[(?P<label>[^\]\n]+)\]\((?P<href>(?:https?://|mailto:)[^)\s]+)\)"
    r"|(?P<url>https?://[^\s<>()\[\]`]+[^\s<>()\[\]`.,;:!?'\"])"
)

# Node types whose children are inline content (text and friends).
_INLINE_TYPES = frozenset({
    "text", "hardBreak", "mention", "emoji", "inlineCard", "status", "date",
    "placeholder", "inlineExtension", "mediaInline",
})


# ---------------------------------------------------------------- text -> ADF

def text_to_adf(text: str) -> dict[str, Any]:
    """Markdown-ish text -> an ADF ``doc`` that Jira Cloud accepts.

    Every text node is non-empty and code marks are never combined with other
    marks except links, as the ADF schema requires.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    blocks: list[dict[str, Any]] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if not line.strip():
            index += 1
            continue
        fence = _FENCE_RE.match(line)
        if fence:
            index = _code_block(lines, index + 1, fence.group(1), blocks)
            continue
        heading = _HEADING_RE.match(line)
        if heading:
            level = len(heading.group(1))
            blocks.append({"type": "heading", "attrs": {"level": level},
                           "content": _inline(heading.group(2))})
            index += 1
            continue
        if _RULE_RE.match(line):
            blocks.append({"type": "rule"})
            index += 1
            continue
        if _BULLET_RE.match(line) or _ORDERED_RE.match(line):
            index = _list_block(lines, index, blocks)
            continue
        if _QUOTE_RE.match(line):
            quoted: list[str] = []
            while index < len(lines) and (match := _QUOTE_RE.match(lines[index])):
                quoted.append(match.group(1))
                index += 1
            blocks.append({"type": "blockquote",
                           "content": [_paragraph(quoted)]})
            continue
        paragraph: list[str] = []
        while index < len(lines) and _is_paragraph_line(lines[index]):
            paragraph.append(lines[index])
            index += 1
        blocks.append(_paragraph(paragraph))
    return {"type": "doc", "version": 1, "content": blocks}


def stored_size(doc: dict[str, Any]) -> int:
    """The characters Jira stores for ``doc``: its compact JSON, which Jira's limit counts."""
    return len(json.dumps(doc, ensure_ascii=False, separators=(",", ":")))


def text_to_adf_within(text: str, max_chars: int, note: str) -> dict[str, Any]:
    """``text_to_adf(text)``, cut so that its stored size is at most ``max_chars``.

    The plain text is not the measure: every list item, break and mark adds markup,
    so a long list is several times larger as ADF. The longest prefix that fits
    (found by bisection) ends with ``note``, saying that the text was cut.
    """
    doc = text_to_adf(text)
    if stored_size(doc) <= max_chars:
        return doc
    fits, too_long = 0, len(text)
    while too_long - fits > 1:
        middle = (fits + too_long) // 2
        if stored_size(text_to_adf(text[:middle].rstrip() + note)) <= max_chars:
            fits = middle
        else:
            too_long = middle
    return text_to_adf(text[:fits].rstrip() + note)


def _is_paragraph_line(line: str) -> bool:
    return bool(line.strip()) and not (
        _FENCE_RE.match(line) or _HEADING_RE.match(line) or _RULE_RE.match(line)
        or _BULLET_RE.match(line) or _ORDERED_RE.match(line) or _QUOTE_RE.match(line)
    )


def _code_block(lines: list[str], index: int, language: str,
                blocks: list[dict[str, Any]]) -> int:
    """Collect a fenced block up to its closing fence (or the end); return the next index."""
    code: list[str] = []
    while index < len(lines) and not re.match(r"^\s*```+\s*$", lines[index]):
        code.append(lines[index])
        index += 1
    node: dict[str, Any] = {"type": "codeBlock", "content": []}
    if language:
        node["attrs"] = {"language": language}
    body = "\n".join(code)
    if body:
        node["content"] = [{"type": "text", "text": body}]
    blocks.append(node)
    return index + 1


def _list_block(lines: list[str], index: int, blocks: list[dict[str, Any]]) -> int:
    """Consecutive items of one kind make one list; indented lines continue an item."""
    ordered = _ORDERED_RE.match(lines[index])
    pattern = _ORDERED_RE if ordered else _BULLET_RE
    items: list[list[str]] = []
    while index < len(lines):
        line = lines[index]
        match = pattern.match(line)
        if match:
            items.append([match.group(match.lastindex or 1)])
        elif items and line.startswith((" ", "\t")) and line.strip() and not (
                _BULLET_RE.match(line) or _ORDERED_RE.match(line)):
            items[-1].append(line.strip())
        else:
            break
        index += 1
    node: dict[str, Any] = {
        "type": "orderedList" if ordered else "bulletList",
        "content": [{"type": "listItem", "content": [_paragraph(item)]} for item in items],
    }
    if ordered:
        node["attrs"] = {"order": int(ordered.group(1))}
    blocks.append(node)
    return index


def _paragraph(lines: list[str]) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    for number, line in enumerate(lines):
        if number:
            content.append({"type": "hardBreak"})
        content.extend(_inline(line.strip()))
    return {"type": "paragraph", "content": content}


def _inline(text: str, marks: tuple[dict[str, Any], ...] = ()) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = []
    position = 0
    for match in _INLINE_RE.finditer(text):
        nodes.extend(_text_node(text[position:match.start()], marks))
        if match.group("code") is not None:
            links = tuple(mark for mark in marks if mark["type"] == "link")
            nodes.extend(_text_node(match.group("code"), (*links, {"type": "code"})))
        elif match.group("bold") is not None:
            nodes.extend(_inline(match.group("bold"), (*marks, {"type": "strong"})))
        else:
            href = match.group("href") or match.group("url")
            label = match.group("label") or href
            link = {"type": "link", "attrs": {"href": href}}
            nodes.extend(_text_node(label, (*marks, link)))
        position = match.end()
    nodes.extend(_text_node(text[position:], marks))
    return nodes


def _text_node(text: str, marks: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    if not text:
        return []
    node: dict[str, Any] = {"type": "text", "text": text}
    if marks:
        node["marks"] = [dict(mark) for mark in marks]
    return [node]


# ---------------------------------------------------------------- ADF -> text

def adf_to_text(doc: dict[str, Any] | str | None) -> str:
    """Any ADF document (or a v2 plain string, or None) -> plain text / markdown."""
    if doc is None:
        return ""
    if isinstance(doc, str):
        return doc
    return _render(doc, 0).strip("\n")


def _render(node: Any, depth: int) -> str:
    if depth > MAX_DEPTH:
        return ""
    if isinstance(node, str):
        return node
    if not isinstance(node, dict):
        return ""
    kind = node.get("type")
    raw_attrs = node.get("attrs")
    attrs: dict[str, Any] = raw_attrs if isinstance(raw_attrs, dict) else {}
    if kind == "text":
        return _render_text(node)
    if kind == "hardBreak":
        return "\n"
    if kind in ("paragraph", "heading"):
        inner = _render_inline(node, depth)
        if kind == "heading":
            level = attrs.get("level")
            hashes = "#" * (level if isinstance(level, int) and 1 <= level <= 6 else 2)
            return f"{hashes} {inner}" if inner else ""
        return inner
    if kind in ("bulletList", "orderedList", "taskList", "decisionList"):
        return _render_list(node, kind, attrs, depth)
    if kind == "codeBlock":
        language = attrs.get("language")
        language = language if isinstance(language, str) and language.isprintable() else ""
        return f"```{language}\n{_render_inline(node, depth)}\n```"
    if kind == "blockquote":
        inner = _render_blocks(node, depth)
        return "\n".join(f"> {line}" if line else ">" for line in inner.split("\n"))
    if kind == "rule":
        return "---"
    if kind == "table":
        return _render_table(node, depth)
    if kind in ("expand", "nestedExpand"):
        title = attrs.get("title")
        inner = _render_blocks(node, depth)
        return f"{title}\n{inner}" if isinstance(title, str) and title else inner
    leaf = _leaf_text(kind, attrs)
    if leaf is not None:
        return leaf
    # doc, panel, listItem, layoutSection, unknown containers...: keep their text.
    return _render_children(node, depth)


def _render_text(node: dict[str, Any]) -> str:
    text = node.get("text")
    if not isinstance(text, str):
        return ""
    marks = node.get("marks")
    if not isinstance(marks, list) or not text.strip():
        return text
    href = None
    for mark in marks:
        if not isinstance(mark, dict):
            continue
        kind = mark.get("type")
        if kind == "code":
            text = f"`{text}`"
        elif kind == "strong":
            text = f"**{text}**"
        elif kind == "em":
            text = f"*{text}*"
        elif kind == "strike":
            text = f"~~{text}~~"
        elif kind == "link":
            mark_attrs = mark.get("attrs")
            candidate = mark_attrs.get("href") if isinstance(mark_attrs, dict) else None
            href = candidate if isinstance(candidate, str) else None
    if href and href != node.get("text"):
        return f"[{text}]({href})"
    return text


def _leaf_text(kind: Any, attrs: dict[str, Any]) -> str | None:
    """The text an inline leaf node (mention, emoji, card, status...) carries."""
    if kind == "mention":
        text = attrs.get("text")
        if isinstance(text, str) and text:
            return text if text.startswith("@") else f"@{text}"
        account = attrs.get("id")
        return f"@{account}" if isinstance(account, str) else "@someone"
    if kind == "emoji":
        for name in ("text", "shortName"):
            if isinstance(attrs.get(name), str):
                return str(attrs[name])
        return ""
    if kind in ("inlineCard", "blockCard", "embedCard"):
        url = attrs.get("url")
        if isinstance(url, str):
            return url
        data = attrs.get("data")
        if isinstance(data, dict) and isinstance(data.get("url"), str):
            return str(data["url"])
        return ""
    if kind == "status":
        text = attrs.get("text")
        return f"[{text}]" if isinstance(text, str) else ""
    if kind == "date":
        return _date_text(attrs.get("timestamp"))
    if kind in ("media", "mediaInline"):
        alt = attrs.get("alt")
        return f"[attachment: {alt}]" if isinstance(alt, str) and alt else "[attachment]"
    return None


def _date_text(timestamp: Any) -> str:
    try:
        moment = datetime.datetime.fromtimestamp(int(timestamp) / 1000, datetime.UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return ""
    return moment.date().isoformat()


def _children(node: dict[str, Any]) -> list[Any]:
    content = node.get("content")
    return content if isinstance(content, list) else []


def _render_inline(node: dict[str, Any], depth: int) -> str:
    return "".join(_render(child, depth + 1) for child in _children(node))


def _render_blocks(node: dict[str, Any], depth: int, separator: str = "\n\n") -> str:
    parts = (_render(child, depth + 1) for child in _children(node))
    return separator.join(part for part in parts if part)


def _render_children(node: dict[str, Any], depth: int) -> str:
    """Inline children are joined as they are, block children by blank lines."""
    children = _children(node)
    if children and all(isinstance(child, dict) and child.get("type") in _INLINE_TYPES
                        for child in children):
        return _render_inline(node, depth)
    text = node.get("text")
    if not children and isinstance(text, str):
        return text
    return _render_blocks(node, depth)


def _render_list(node: dict[str, Any], kind: str, attrs: dict[str, Any], depth: int) -> str:
    order = attrs.get("order")
    number = order if isinstance(order, int) and 0 <= order < 10**9 else 1
    lines: list[str] = []
    for item in _children(node):
        if not isinstance(item, dict):
            continue
        if kind == "orderedList":
            prefix = f"{number}. "
            number += 1
        elif kind == "taskList":
            item_attrs = item.get("attrs")
            done = isinstance(item_attrs, dict) and item_attrs.get("state") == "DONE"
            prefix = "- [x] " if done else "- [ ] "
        else:
            prefix = "- "
        if item.get("type") in ("taskItem", "decisionItem"):
            body = _render_children(item, depth + 1)
        else:
            body = _render_blocks(item, depth + 1, "\n")
        body_lines = body.split("\n") if body else [""]
        indent = " " * len(prefix)
        lines.append(prefix + body_lines[0])
        lines.extend(indent + line if line else line for line in body_lines[1:])
    return "\n".join(lines)


def _render_table(node: dict[str, Any], depth: int) -> str:
    rows: list[str] = []
    for row in _children(node):
        if not isinstance(row, dict):
            continue
        cells = [_render_blocks(cell, depth + 2, " ").replace("\n", " ")
                 for cell in _children(row) if isinstance(cell, dict)]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


# ---------------------------------------------------------------- validation

def adf_problems(doc: Any) -> list[str]:
    """Why ``doc`` is not an ADF document Jira would accept (empty list: it is fine).

    Checks the envelope and the generic node shape (type strings, content
    lists, non-empty text nodes), not the full schema.
    """
    if not isinstance(doc, dict):
        return ["the body must be an ADF document object, not " + type(doc).__name__]
    problems: list[str] = []
    if doc.get("type") != "doc":
        problems.append("the top node must have type 'doc'")
    if doc.get("version") != 1:
        problems.append("the document must have version 1")
    if not isinstance(doc.get("content"), list):
        problems.append("the document must have a content list")
        return problems
    stack: list[tuple[Any, int]] = [(child, 1) for child in doc["content"]]
    while stack and len(problems) < 10:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            problems.append(f"nodes are nested deeper than {MAX_DEPTH} levels")
            break
        if not isinstance(node, dict) or not isinstance(node.get("type"), str):
            problems.append("every node must be an object with a string 'type'")
            continue
        if node["type"] == "text" and not (isinstance(node.get("text"), str) and node["text"]):
            problems.append("text nodes must have a non-empty 'text' string")
        content = node.get("content")
        if content is not None:
            if not isinstance(content, list):
                problems.append(f"the content of a {node['type']} node must be a list")
                continue
            stack.extend((child, depth + 1) for child in content)
    return problems


def is_empty(doc: dict[str, Any]) -> bool:
    """True when the document holds no visible text."""
    return not adf_to_text(doc).strip()
