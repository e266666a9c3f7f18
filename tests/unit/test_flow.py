"""Pure helpers of the flow: rework feedback, secret scrubbing, run markers."""

from __future__ import annotations

from mwai.model import Comment
from mwai.runner.agent.prompt import feedback_since_last_ai_comment
from mwai.runner.journal import run_marker
from mwai.scrub import scrub

AI = "ai-account"


def comment(number: int, author: str | None, body: str = "") -> Comment:
    return Comment(id=str(number), author_account_id=author, body=body or f"c{number}",
                   created=f"2026-01-01T00:00:0{number}.000+0000")


def test_feedback_is_every_comment_after_the_last_ai_comment() -> None:
    comments = [comment(1, "human"), comment(2, AI), comment(3, "human"), comment(4, AI),
                comment(5, "human"), comment(6, "other")]
    assert [c.id for c in feedback_since_last_ai_comment(comments, AI)] == ["5", "6"]


def test_feedback_without_any_ai_comment_is_everything() -> None:
    comments = [comment(1, "human"), comment(2, None)]
    assert feedback_since_last_ai_comment(comments, AI) == comments


def test_no_feedback_when_the_ai_spoke_last() -> None:
    assert feedback_since_last_ai_comment([comment(1, "human"), comment(2, AI)], AI) == []


def test_scrub_hides_every_secret_and_ignores_empty_ones() -> None:
    text = "token abc123 and key xyz789 at https://x"
    assert scrub(text, ["abc123", "", "xyz789"]) == "token *** and key *** at https://x"


def test_run_markers_are_distinct_per_run() -> None:
    assert run_marker(1) != run_marker(12)
    assert run_marker(1) not in run_marker(12)
