"""The built-in agent (no MWAI_AGENT_COMMAND): the LLM answers with file edits.

The answer is one JSON object of whole-file edits; each is applied only when it
stays inside the worktree (no "..", no absolute path, no .git, no symlink out);
anything else is refused and reported in the summary.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from mwai.clients.llm import LlmClient, LlmReply
from mwai.errors import PermanentError
from mwai.runner.agent.config import AgentConfig
from mwai.runner.agent.output import SUMMARY_MAX_CHARS, AgentResult
from mwai.runner.agent.prompt import cut_text

SNAPSHOT_FILE_MAX_BYTES = 100_000

BUILTIN_SYSTEM = (
    "You are a careful coding agent. You change files of a git repository to complete a "
    "task. Answer with ONE JSON object and nothing else:\n"
    '{"summary": "<what you changed and why, for the reviewer>", "edits": ['
    '{"path": "<path relative to the repository root>", "content": "<the full new file '
    'text>"}, {"path": "<path>", "delete": true}]}\n'
    "Give the complete content of every file you change. Paths are relative, use '/', "
    "never '..', never .git/. An empty edits list means no change is needed: say why in "
    "the summary."
)


@dataclass(frozen=True)
class EditOutcome:
    applied: list[str]
    refused: list[tuple[str, str]]  # (path, reason)


def _repository_snapshot(worktree: Path, budget_chars: int) -> str:
    """File list and as many (small, text) file contents as fit in the budget."""
    paths: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(worktree):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name != ".git" and not path.is_symlink():
                paths.append(path)
    listing = "\n".join(str(p.relative_to(worktree)) for p in paths)
    parts = ["# Repository files\n" + listing]
    used = len(parts[0])
    for path in paths:
        try:
            if path.stat().st_size > SNAPSHOT_FILE_MAX_BYTES:
                continue
            data = path.read_bytes()
        except OSError:
            continue
        if b"\0" in data:
            continue
        text = data.decode("utf-8", "replace")
        block = f"\n\n## File {path.relative_to(worktree)}\n```\n{text}\n```"
        if used + len(block) > budget_chars:
            parts.append("\n\n(further files omitted to fit the prompt)")
            break
        parts.append(block)
        used += len(block)
    return "".join(parts)


def _extract_json(text: str) -> dict[str, Any]:
    stripped = text.strip()
    fenced = re.search(r"```(?:json)?\s*\n(.*?)\n```", stripped, re.DOTALL)
    if fenced:
        stripped = fenced.group(1)
    start, end = stripped.find("{"), stripped.rfind("}")
    if start < 0 or end < start:
        raise ValueError("no JSON object found")
    document = json.loads(stripped[start : end + 1])
    if not isinstance(document, dict):
        raise ValueError("the answer is not a JSON object")
    if not isinstance(document.get("summary", ""), str):
        raise ValueError('"summary" must be a string')
    edits = document.get("edits", [])
    if not isinstance(edits, list):
        raise ValueError('"edits" must be a list')
    for index, edit in enumerate(edits):
        if not isinstance(edit, dict) or not isinstance(edit.get("path"), str):
            raise ValueError(f'edits[{index}] must be an object with a string "path"')
        if edit.get("delete") is not True and not isinstance(edit.get("content"), str):
            raise ValueError(f'edits[{index}] needs a string "content" or "delete": true')
    return document


def _refusal(root_real: str, rel: str) -> str | None:
    """Why the edit of ``rel`` is refused, or None when it stays inside the worktree."""
    if not rel or not rel.strip():
        return "empty path"
    if "\0" in rel or any(ord(ch) < 32 for ch in rel):
        return "control character in path"
    if "\\" in rel:
        return "backslash in path (use '/')"
    if PurePosixPath(rel).is_absolute() or re.match(r"^[A-Za-z]:", rel):
        return "absolute path"
    parts = [part for part in PurePosixPath(rel).parts if part != "."]
    if ".." in parts:
        return "'..' in path"
    if not parts:
        return "path names the worktree itself"
    if any(part.lower() == ".git" for part in parts):
        return "inside .git/"
    real = os.path.realpath(os.path.join(root_real, *parts))
    if real != root_real and not real.startswith(root_real + os.sep):
        return "leaves the worktree (through a symlink)"
    inside = os.path.relpath(real, root_real).split(os.sep)
    if real == root_real or inside[0].lower() == ".git":
        return "resolves into .git/ or the worktree itself (through a symlink)"
    return None


def apply_edits(worktree: Path, edits: list[dict[str, Any]], max_change_bytes: int) -> EditOutcome:
    """Apply the LLM's edits inside ``worktree`` only; everything else is refused."""
    total = sum(len(str(e.get("content", "")).encode("utf-8")) for e in edits)
    if total > max_change_bytes:
        too_big = (f"the change is {total} bytes, more than MWAI_AGENT_MAX_CHANGE_BYTES="
                   f"{max_change_bytes}; nothing was written")
        return EditOutcome([], [(str(e.get("path")), too_big) for e in edits])
    root_real = os.path.realpath(worktree)
    applied: list[str] = []
    refused: list[tuple[str, str]] = []
    for edit in edits:
        rel = str(edit["path"])
        reason = _refusal(root_real, rel)
        if reason is None:
            reason = _apply_one(root_real, rel, edit)
        if reason is None:
            applied.append(rel)
        else:
            refused.append((rel, reason))
    return EditOutcome(applied, refused)


def _apply_one(root_real: str, rel: str, edit: dict[str, Any]) -> str | None:
    parts = [part for part in PurePosixPath(rel).parts if part != "."]
    link = Path(root_real, *parts)
    target = Path(os.path.realpath(link))
    try:
        if edit.get("delete") is True:
            if link.is_symlink() or link.is_file():
                link.unlink()
                return None
            return "cannot delete: not a file" if link.exists() else "cannot delete: no such file"
        if target.is_dir():
            return "is a directory"
        target.parent.mkdir(parents=True, exist_ok=True)
        # The parents just created might have raced with nothing else; re-check anyway.
        if _refusal(root_real, rel) is not None:
            return "leaves the worktree"
        target.write_text(str(edit["content"]), encoding="utf-8")
    except OSError as exc:
        return f"cannot write: {exc.strerror or exc}"
    return None


async def run_builtin_agent(
    config: AgentConfig, worktree: Path, prompt: str, llm: LlmClient
) -> AgentResult:
    """Ask the LLM for edits (one repair attempt on invalid JSON) and apply them."""
    started = time.monotonic()
    budget = max(1000, config.prompt_max_chars - len(prompt))
    user = prompt + "\n\n" + _repository_snapshot(worktree, budget)
    messages = [{"role": "user", "content": user}]
    replies: list[LlmReply] = []
    document: dict[str, Any] | None = None
    for _attempt in range(2):
        reply = await llm.complete(BUILTIN_SYSTEM, messages)
        replies.append(reply)
        try:
            document = _extract_json(reply.text)
            break
        except ValueError as exc:
            messages += [
                {"role": "assistant", "content": reply.text},
                {"role": "user", "content": f"That answer is not valid: {exc}. Answer again "
                 "with only the JSON object described in the instructions."},
            ]
    if document is None:
        raise PermanentError(
            "the built-in agent's LLM did not answer with valid edit JSON twice; "
            f"last answer starts: {replies[-1].text[:200]!r}"
        )
    edits: list[dict[str, Any]] = document.get("edits", [])
    outcome = apply_edits(worktree, edits, config.max_change_bytes)
    summary = str(document.get("summary", "")).strip() or "(no summary)"
    if outcome.refused:
        summary += "\n\nRefused edits:\n" + "\n".join(
            f"- {path!r}: {reason}" for path, reason in outcome.refused
        )
    output = "\n".join(
        [f"applied: {path}" for path in outcome.applied]
        + [f"refused: {path!r}: {reason}" for path, reason in outcome.refused]
    )
    costs = [r.cost_usd for r in replies if r.cost_usd is not None]
    return AgentResult(
        exit_code=1 if outcome.refused and not outcome.applied else 0,
        summary=cut_text(summary, SUMMARY_MAX_CHARS),
        output=cut_text(output, config.max_output_bytes),
        timed_out=False,
        duration_s=time.monotonic() - started,
        cost_usd=sum(costs) if costs else None,
        input_tokens=sum(r.input_tokens for r in replies),
        output_tokens=sum(r.output_tokens for r in replies),
    )
