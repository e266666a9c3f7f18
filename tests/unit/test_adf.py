"""Text <-> ADF: what Jira shows for what mwai writes, and what prompts get from Jira."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from mwai.clients.adf import (
    MAX_DEPTH,
    adf_problems,
    adf_to_text,
    stored_size,
    text_to_adf,
    text_to_adf_within,
)


def text(value: str, *marks: dict[str, Any]) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "text", "text": value}
    if marks:
        node["marks"] = list(marks)
    return node


def doc(*content: dict[str, Any]) -> dict[str, Any]:
    return {"type": "doc", "version": 1, "content": list(content)}


def para(*content: dict[str, Any]) -> dict[str, Any]:
    return {"type": "paragraph", "content": list(content)}


PLAN = """## Overview

Add a **login** page. See https://example.com/spec and [the docs](https://docs.example.com/a).

- first bullet with `code`
- second bullet

1. step one
2. step two

```python
def f():
    return 1
```

Thanks!"""


def test_markdown_becomes_the_matching_adf_nodes() -> None:
    result = text_to_adf(PLAN)
    assert adf_problems(result) == []
    kinds = [node["type"] for node in result["content"]]
    assert kinds == ["heading", "paragraph", "bulletList", "orderedList", "codeBlock",
                     "paragraph"]
    heading, paragraph, bullets, ordered, code, _ = result["content"]
    assert heading["attrs"] == {"level": 2}
    assert text("login", {"type": "strong"}) in paragraph["content"]
    link = {"type": "link", "attrs": {"href": "https://example.com/spec"}}
    assert text("https://example.com/spec", link) in paragraph["content"]
    docs_link = {"type": "link", "attrs": {"href": "https://docs.example.com/a"}}
    assert text("the docs", docs_link) in paragraph["content"]
    first_item = bullets["content"][0]["content"][0]["content"]
    assert text("code", {"type": "code"}) in first_item
    assert ordered["attrs"] == {"order": 1} and len(ordered["content"]) == 2
    assert code["attrs"] == {"language": "python"}
    assert code["content"] == [text("def f():\n    return 1")]


def test_round_trip_keeps_the_text_readable() -> None:
    assert adf_to_text(text_to_adf(PLAN)) == PLAN
    # A heading directly followed by text comes back with a blank line between.
    assert adf_to_text(text_to_adf("# Title\nbody")) == "# Title\n\nbody"


def test_lines_of_a_paragraph_stay_separate_lines() -> None:
    result = text_to_adf("line one\nline two")
    assert result["content"] == [para(text("line one"), {"type": "hardBreak"},
                                      text("line two"))]
    assert adf_to_text(result) == "line one\nline two"


def test_unclosed_code_fence_keeps_the_code() -> None:
    result = text_to_adf("```\nprint('x')")
    assert result["content"][0]["content"] == [text("print('x')")]
    assert adf_problems(result) == []


def test_empty_text_gives_an_empty_valid_document() -> None:
    assert text_to_adf("") == doc()
    assert text_to_adf("\n\n  \n") == doc()
    assert adf_to_text(text_to_adf("")) == ""


def test_text_that_only_looks_like_markup_is_kept() -> None:
    odd = "a * b ** c ` d [x](javascript:alert(1)) **"
    result = text_to_adf(odd)
    assert adf_problems(result) == []
    assert adf_to_text(result) == odd
    assert "link" not in str(result)  # only http(s)/mailto links become link marks


def test_v2_strings_and_none_pass_through() -> None:
    assert adf_to_text("plain *wiki* text") == "plain *wiki* text"
    assert adf_to_text(None) == ""


def test_nodes_written_by_people_in_jira_keep_their_text() -> None:
    human = doc(
        para(text("Hi "), {"type": "mention", "attrs": {"id": "abc", "text": "@Ann"}},
             text(" "), {"type": "emoji", "attrs": {"shortName": ":smile:", "text": "😄"}},
             text(" see "), {"type": "inlineCard", "attrs": {"url": "https://x.test/1"}},
             text(" "), {"type": "status", "attrs": {"text": "BLOCKED", "color": "red"}},
             text(" due "), {"type": "date", "attrs": {"timestamp": "1700000000000"}}),
        {"type": "panel", "attrs": {"panelType": "info"},
         "content": [para(text("Panel text", {"type": "em"}))]},
        {"type": "table", "content": [
            {"type": "tableRow", "content": [
                {"type": "tableHeader", "content": [para(text("Name"))]},
                {"type": "tableHeader", "content": [para(text("Value"))]}]},
            {"type": "tableRow", "content": [
                {"type": "tableCell", "content": [para(text("a"))]},
                {"type": "tableCell", "content": [para(text("1"))]}]}]},
        {"type": "mediaSingle", "content": [
            {"type": "media", "attrs": {"id": "m1", "type": "file", "alt": "screen.png"}}]},
        {"type": "taskList", "content": [
            {"type": "taskItem", "attrs": {"state": "DONE"}, "content": [text("shipped")]},
            {"type": "taskItem", "attrs": {"state": "TODO"}, "content": [text("test")]}]},
        {"type": "expand", "attrs": {"title": "Details"}, "content": [para(text("hidden"))]},
        {"type": "brandNewNode", "content": [para(text("future text"))]},
        {"type": "blockquote", "content": [para(text("quoted"))]},
    )
    assert adf_to_text(human) == (
        "Hi @Ann 😄 see https://x.test/1 [BLOCKED] due 2023-11-14\n\n"
        "*Panel text*\n\n"
        "| Name | Value |\n| a | 1 |\n\n"
        "[attachment: screen.png]\n\n"
        "- [x] shipped\n- [ ] test\n\n"
        "Details\nhidden\n\n"
        "future text\n\n"
        "> quoted"
    )


def test_nested_lists_are_indented() -> None:
    nested = doc({"type": "orderedList", "attrs": {"order": 3}, "content": [
        {"type": "listItem", "content": [
            para(text("outer")),
            {"type": "bulletList", "content": [
                {"type": "listItem", "content": [para(text("inner"))]}]}]}]})
    assert adf_to_text(nested) == "3. outer\n   - inner"


def test_hostile_shapes_do_not_crash() -> None:
    hostile: list[Any] = [
        {}, [], 42, {"type": "doc"}, {"type": "doc", "content": "nope"},
        {"type": "doc", "content": [None, 1, "str", [], {"type": None}, {"content": {}}]},
        doc({"type": "text", "text": 5}, {"type": "text", "text": "x", "marks": "bold"},
            {"type": "text", "text": "y", "marks": [None, {"type": "link", "attrs": "z"}]},
            {"type": "heading", "attrs": {"level": "9"}, "content": [text("h")]},
            {"type": "orderedList", "attrs": {"order": -5}, "content": [None, {}]},
            {"type": "codeBlock", "attrs": {"language": "\x1b[31m"}, "content": [text("c")]},
            {"type": "mention", "attrs": None}, {"type": "date", "attrs": {"timestamp": "x"}},
            {"type": "date", "attrs": {"timestamp": 10**30}},
            {"type": "table", "content": [None, {"type": "tableRow", "content": [3]}]}),
    ]
    for value in hostile:
        assert isinstance(adf_to_text(value), str)


def test_deep_nesting_is_cut_off_not_a_recursion_error() -> None:
    node: dict[str, Any] = text("bottom")
    for _ in range(5000):
        node = {"type": "blockquote", "content": [node]}
    assert "bottom" not in adf_to_text(doc(node))
    assert adf_problems(doc(node)) == [f"nodes are nested deeper than {MAX_DEPTH} levels"]


def test_adf_problems_names_what_is_wrong() -> None:
    assert adf_problems("plain string") == [
        "the body must be an ADF document object, not str"]
    assert "the document must have version 1" in adf_problems(
        {"type": "doc", "content": []})
    assert adf_problems(doc(para({"type": "text", "text": ""}))) == [
        "text nodes must have a non-empty 'text' string"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["type", "content", "text", "attrs", "marks", "level", "order",
                         "url", "href", "state"]), children, max_size=5),
    max_leaves=30)


@settings(max_examples=100, deadline=None)
@given(json_values)
def test_any_json_renders_to_text(value: Any) -> None:
    assert isinstance(adf_to_text(value), str)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab #-*`[]()1.\n>_:/htps"), max_size=60))
def test_any_text_converts_to_a_valid_document(value: str) -> None:
    result = text_to_adf(value)
    assert adf_problems(result) == []
    assert isinstance(adf_to_text(result), str)


def test_text_to_adf_within_bounds_the_stored_json_of_a_long_list() -> None:
    text = "\n".join(f"{n}. item number {n}" for n in range(1, 2001))
    assert stored_size(text_to_adf(text)) > 100_000  # the defect: ~30 KB of text

    doc = text_to_adf_within(text, 20_000, "\n\n[cut]")

    assert stored_size(doc) <= 20_000
    rendered = adf_to_text(doc)
    assert rendered.startswith("1. item number 1\n2. item number 2")
    assert rendered.endswith("[cut]") and "item number 2000" not in rendered
    assert text_to_adf_within("short", 20_000, "[cut]") == text_to_adf("short")
