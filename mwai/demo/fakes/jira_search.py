"""The JQL subset fake Jira searches with (what mwai's reconciliation pass sends).

Clauses ``field = value``, ``field != value``, ``field in (a, b)``, ``updated >=
"-5m"`` (relative minutes/hours/days, or "yyyy-MM-dd HH:mm" in UTC), joined by AND
/ OR with parentheses, then ``ORDER BY field [ASC|DESC]``. Fields: assignee,
status, project, issuetype, key, updated. Anything else is Jira's 400 "Error in the
JQL Query", as on a real site: a query mwai sends that only a fake would accept
fails the tests.
"""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from mwai.demo.fakes.jira_site import FakeIssue

Predicate = Callable[[FakeIssue], bool]
_TOKEN = re.compile(r'\s*(?:(\()|(\))|(,)|(!=|>=|<=|=|>|<)|"((?:[^"\\]|\\.)*)"|([^\s(),=!<>"]+))')
_UNITS_S = {"m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


class JqlError(ValueError):
    """Jira's 400 for a query it cannot read."""


@dataclass
class _Token:
    kind: str  # ( ) , op str word
    text: str


def _tokens(jql: str) -> list[_Token]:
    tokens, position = [], 0
    while position < len(jql.rstrip()):
        match = _TOKEN.match(jql, position)
        if match is None or match.end() == position:
            raise JqlError(f"Error in the JQL Query: unexpected character at {position}.")
        position = match.end()
        kinds = ("(", ")", ",", "op", "str", "word")
        for kind, text in zip(kinds, match.groups(), strict=True):
            if text is not None:
                tokens.append(_Token(kind, text.replace('\\"', '"')))
                break
    return tokens


def _when(text: str) -> float:
    relative = re.fullmatch(r"-(\d+)([mhdw])", text.strip())
    if relative:
        return time.time() - int(relative.group(1)) * _UNITS_S[relative.group(2)]
    for layout in ("%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M", "%Y-%m-%d", "%Y/%m/%d"):
        try:
            moment = datetime.datetime.strptime(text.strip(), layout)
        except ValueError:
            continue
        return moment.replace(tzinfo=datetime.UTC).timestamp()
    raise JqlError(f"Error in the JQL Query: date value '{text}' for field 'updated' is "
                   "invalid.")


def _value(issue: FakeIssue, name: str) -> str | None:
    values = {"assignee": issue.assignee_account_id, "status": issue.status,
              "project": issue.project, "issuetype": issue.issue_type, "key": issue.key}
    return values[name]


class _Parser:
    def __init__(self, jql: str) -> None:
        self.tokens = _tokens(jql)
        self.at = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, kind: str | None = None) -> _Token:
        token = self.peek()
        if token is None or (kind is not None and token.kind != kind):
            raise JqlError("Error in the JQL Query: the query ends or continues unexpectedly.")
        self.at += 1
        return token

    def sees(self, kind: str, word: str | None = None) -> bool:
        token = self.peek()
        return token is not None and token.kind == kind and (
            word is None or token.text.upper() == word)

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token is not None and token.kind == "word" and token.text.upper() == word:
            self.at += 1
            return True
        return False

    def expression(self) -> Predicate:
        terms = [self.conjunction()]
        while self.keyword("OR"):
            terms.append(self.conjunction())
        return lambda issue: any(term(issue) for term in terms)

    def conjunction(self) -> Predicate:
        terms = [self.clause()]
        while self.keyword("AND"):
            terms.append(self.clause())
        return lambda issue: all(term(issue) for term in terms)

    def clause(self) -> Predicate:
        if self.sees("("):
            self.take("(")
            inner = self.expression()
            self.take(")")
            return inner
        name = self.take("word").text.lower()
        if name == "updated":
            op = self.take("op").text
            since = _when(self.literal())
            if op not in (">=", ">"):
                raise JqlError(f"Error in the JQL Query: the fake supports only "
                               f"'updated >=', not '{op}'.")
            return lambda issue: issue.updated_s >= since
        if name not in ("assignee", "status", "project", "issuetype", "key"):
            raise JqlError(f"Error in the JQL Query: Field '{name}' does not exist or you do "
                           "not have permission to view it.")
        if self.keyword("IN"):
            self.take("(")
            wanted = {self.literal().casefold()}
            while self.sees(","):
                self.take(",")
                wanted.add(self.literal().casefold())
            self.take(")")
            return lambda issue: (_value(issue, name) or "").casefold() in wanted
        op = self.take("op").text
        expected = self.literal().casefold()
        if op not in ("=", "!="):
            raise JqlError(f"Error in the JQL Query: operator '{op}' is not supported for "
                           f"field '{name}'.")
        same = op == "="
        return lambda issue: ((_value(issue, name) or "").casefold() == expected) == same

    def literal(self) -> str:
        token = self.take()
        if token.kind not in ("str", "word"):
            raise JqlError("Error in the JQL Query: expecting a value.")
        return token.text


def parse_jql(jql: str) -> tuple[Predicate, str, bool]:
    """The filter of ``jql``, its ORDER BY field and whether descending."""
    parser = _Parser(jql)
    predicate: Predicate = (lambda issue: True) if parser.peek() is None or parser.sees(
        "word", "ORDER") else parser.expression()
    order, descending = "key", False
    if parser.keyword("ORDER"):
        if not parser.keyword("BY"):
            raise JqlError("Error in the JQL Query: expecting 'BY' after 'ORDER'.")
        order = parser.take("word").text.lower()
        descending = parser.keyword("DESC")
        if not descending:
            parser.keyword("ASC")
    rest = parser.peek()
    if rest is not None:
        raise JqlError(f"Error in the JQL Query: unexpected '{rest.text}'.")
    return predicate, order, descending


def search(issues: list[FakeIssue], jql: str) -> list[FakeIssue]:
    predicate, order, descending = parse_jql(jql)
    found = [issue for issue in issues if predicate(issue)]
    if order == "updated":
        return sorted(found, key=lambda issue: issue.updated_s, reverse=descending)
    return sorted(found, key=lambda issue: int(issue.key.rpartition("-")[2]),
                  reverse=descending)
