"""The AI Runner flow: one claimed run -> read the issue -> route -> do the step(s).

Every side effect (a comment, a sub-task, a push, a pull request, a transition)
is journaled (mwai.runner.journal): a retried attempt of the same run skips what is
done, so nothing is ever made twice. Across *different* runs the remote state
is the guard: sub-tasks are matched by their label or summary, the pull request
is found by its head branch, a commit carrying this run's trailer on origin
counts as pushed, and comments carry a run marker. A resumed action never undoes
a person's newer change (the issue's history says who changed it since). The
journaled Jira writes (transitions, assignments, comments, sub-tasks, starting
the next sub-task, the failure report) are in mwai.runner.updates; this module
decides which ones each action makes.

Failures: TransientError propagates (the worker retries the run with backoff);
anything else fails the run. Either way the message names the step. A run
that fails for good posts one short comment on the issue saying how to retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable
from typing import Any, Protocol, TypeVar

import aiohttp

from mwai.clients.github import GitHubClient, GitHubConfig
from mwai.clients.http import CallObserver, new_session
from mwai.clients.jira import JiraClient, JiraConfig
from mwai.clients.llm import LlmClient, LlmConfig, make_llm
from mwai.errors import PermanentError, TransientError
from mwai.logs import FLOW_LOGGER
from mwai.model import ClaimedRun, Comment, Issue, LostRun
from mwai.queue.clock import now_s
from mwai.queue.processor import RunContext
from mwai.queue.store import Store
from mwai.runner.agent import run as agent_module
from mwai.runner.agent.config import AgentConfig
from mwai.runner.agent.output import AgentResult, tool_events
from mwai.runner.agent.process import ToolObserver
from mwai.runner.agent.prompt import build_prompt, feedback_since_last_ai_comment
from mwai.runner.git import GitWorkspace, Worktree
from mwai.runner.git_env import branch_name
from mwai.runner.journal import RunJournal
from mwai.runner.planner import PLAN_MARKER, find_latest_plan, format_plan_comment, write_plan
from mwai.runner.repos import RepoConfig, RepoSources, resolve_repo
from mwai.runner.router import Action, Decision, RoutingRules, approval, route, same_status
from mwai.runner.updates import IssueUpdates, UpdatesConfig
from mwai.runner.verify import report, sandbox
from mwai.runner.verify.loop import ChecksConfig, verify_change
from mwai.scrub import scrub
from mwai.settings import Settings

log = logging.getLogger(FLOW_LOGGER)

RUN_TRAILER = "Mwai-Run"
DONE_MARKER = "[mwai-done]"
T = TypeVar("T")


class AgentRunner(Protocol):
    """run_agent's shape: ``on_tool`` is awaited with each tool call while the agent works."""

    def __call__(self, config: AgentConfig, worktree: Any, prompt: str, llm: LlmClient | None,
                 *, on_tool: ToolObserver | None = None) -> Awaitable[AgentResult]: ...


def _built(client: T | None) -> T:
    """A client of the processor: given to it, or built when it starts."""
    assert client is not None, "the processor has not started"
    return client


class JiraProcessor:
    """Implements ``mwai.queue.processor.Processor`` for MWAI_PROCESSOR=jira."""

    def __init__(
        self,
        settings: Settings,
        *,
        session: aiohttp.ClientSession | None = None,
        jira: JiraClient | None = None,
        llm: LlmClient | None = None,
        github: GitHubClient | None = None,
        git: GitWorkspace | None = None,
        run_agent: AgentRunner | None = None,
        observer: CallObserver | None = None,
    ) -> None:
        self.settings = settings
        self._observer = observer  # metrics hook for every Jira/GitHub/LLM request
        self._session = session
        self._owns_session = session is None
        self._jira = jira
        self._llm = llm
        self._github = github
        self._git = git
        self._run_agent: AgentRunner = run_agent or agent_module.run_agent
        self._updates: IssueUpdates | None = None
        self._started = False
        self._start_lock = asyncio.Lock()
        # Runs of one parent (its sub-tasks share a branch) take turns in this process.
        self._parent_locks: dict[str, asyncio.Lock] = {}

    # ------------------------------------------------------------ life cycle

    async def _start(self) -> None:
        """Build the clients on first use and remove the worktrees a crash left behind."""
        async with self._start_lock:
            if self._started:
                return
            if self._session is None:
                self._session = new_session()
            settings, session = self.settings, self._session
            observer = self._observer
            # Each client takes only its part of the settings (its *Config), so a test or
            # a probe can build one without the other 80 fields.
            self._jira = self._jira or JiraClient(JiraConfig.of(settings), session, observer)
            self._llm = self._llm or make_llm(LlmConfig.of(settings), session, observer)
            self._github = self._github or GitHubClient(GitHubConfig.of(settings), session,
                                                        observer)
            self._git = self._git or GitWorkspace(settings.work_dir, settings.gh_token)
            sandbox.Sandbox(sandbox.SandboxConfig.of(settings)).announce()
            removed = await self._git.cleanup_stale()
            if removed:
                log.info("Removed stale worktrees", extra={"removed": [str(p) for p in removed]})
            self._started = True

    async def start(self) -> None:
        """Called by the worker pool at service start: clean up before the first claim."""
        await self._start()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def jira(self) -> JiraClient:
        return _built(self._jira)

    @property
    def updates(self) -> IssueUpdates:
        if self._updates is None:
            self._updates = IssueUpdates(UpdatesConfig.of(self.settings), self.jira)
        return self._updates

    @property
    def github(self) -> GitHubClient:
        return _built(self._github)

    @property
    def git(self) -> GitWorkspace:
        return _built(self._git)

    def _parent_lock(self, parent_key: str) -> asyncio.Lock:
        return self._parent_locks.setdefault(parent_key, asyncio.Lock())

    @contextlib.asynccontextmanager
    async def _parent_of(self, run: RunJournal, sub: Issue, step: str) -> AsyncIterator[Issue]:
        """A sub-task's parent, read (as ``step``) and held under the lock of its sub-tasks."""
        if not sub.parent_key:
            raise PermanentError(f"sub-task {sub.key} has no parent in Jira")
        async with self._parent_lock(sub.parent_key):
            run.step = step
            yield await self.jira.get_issue(sub.parent_key)

    # --------------------------------------------------------------- process

    async def process(self, ctx: RunContext) -> None:
        run = await RunJournal.load(ctx)
        run.in_flight_s = self.settings.http_timeout_s
        try:
            run.step = "start the processor (clients, stale worktrees)"
            await self._start()
            await self._process(run)
        except asyncio.CancelledError:
            raise
        except TransientError as exc:
            error = self._describe(run, exc)
            if ctx.run.attempts >= self.settings.max_attempts:
                await self._report_failure(run, error)
            raise TransientError(error, exc.retry_after_s) from exc
        except Exception as exc:
            error = self._describe(run, exc)
            await self._report_failure(run, error)
            raise PermanentError(error) from exc
        finally:
            with contextlib.suppress(Exception):
                await self._record_usage(run)

    async def _process(self, run: RunJournal) -> None:
        ctx = run.ctx
        run.step = "read the issue"
        issue = await self.jira.get_issue(ctx.run.issue_key)
        rules = RoutingRules.of(self.settings)
        decision = route(issue, rules)
        resumed = run.earlier_action if set(run.done) - {"agent"} else None
        changes = []  # who changed the issue: the approval, and what a resumed run sees
        if decision.action is not Action.NOOP or resumed not in (None, Action.NOOP.value):
            run.step = "read the issue's history (who changed it)"
            changes = await self.jira.status_changes(issue.key, ("status", "assignee"))
        if decision.action is Action.START:
            decision = approval(decision, issue, [c for c in changes if c.field == "status"],
                                rules)
        if resumed not in (None, Action.NOOP.value, decision.action.value):
            # An earlier attempt began this action and moved the issue on half-way (or failed
            # and handed it to the human, and an operator requeued the run): finish it, unless
            # a person changed the issue since: that is newer and must not be undone.
            people = run.people_since(changes, self.settings.jira_ai_account_id)
            if people:
                await ctx.event("Not resuming: a person changed the issue since", level=
                                "warning", resumed=resumed, changed_by=people)
            else:
                decision = Decision(Action(resumed), f"resuming {resumed} begun by an earlier "
                                                     f"attempt (issue now: {decision.reason})")
        run.action = decision.action
        await ctx.record(action=decision.action.value)
        await ctx.event(f"Action: {decision.action.value}", action=decision.action.value,
                        reason=decision.reason, status=issue.status,
                        history_seen=max((c.history_id for c in changes), default=0))
        handlers = {
            Action.PLAN: self._plan,
            Action.START: self._start_subtasks,
            Action.EXECUTE: self._execute,
            Action.SUBTASK_DONE: self._subtask_done,
            Action.NOOP: self._noop,
        }
        await handlers[decision.action](run, issue, decision)

    def _describe(self, run: RunJournal, exc: BaseException) -> str:
        text = str(exc).strip() or type(exc).__name__
        if not isinstance(exc, TransientError | PermanentError):
            text = f"{type(exc).__name__}: {text}"
        return scrub(f"step '{run.step}' failed: {text}", self.settings.secret_values())

    async def _record_usage(self, run: RunJournal) -> None:
        usage = run.usage
        if usage.cost_usd is None and usage.input_tokens is None and usage.output_tokens is None:
            return
        await run.ctx.add_usage(usage.cost_usd, usage.input_tokens, usage.output_tokens)

    async def report_lost(self, store: Store, lost: LostRun) -> None:
        """Lease recovery failed a run for good: say so on the issue, as any failure."""
        await self._start()
        claimed = ClaimedRun(lost.run_id, lost.issue_key, 0, "{}", 0.0, 0.0, 0, None, None,
                             None, None, lost.worker or "", now_s())
        run = await RunJournal.load(RunContext(run=claimed, store=store, notify=lambda _: None))
        run.action = Action(run.earlier_action) if run.earlier_action else None
        await self._report_failure(run, f"lease recovery: {lost.error or 'worker lost'}")

    async def _report_failure(self, run: RunJournal, error: str) -> None:
        if self._jira is not None:  # else the processor failed before it had a Jira client
            await self.updates.report_failure(run, error)

    # --------------------------------------------------------------- actions

    async def _noop(self, run: RunJournal, issue: Issue, decision: Decision) -> None:
        await run.ctx.event("Nothing to do", reason=decision.reason)

    async def _plan(self, run: RunJournal, issue: Issue, decision: Decision) -> None:
        settings = self.settings
        run.step = "read the comments"
        comments = await self.jira.get_comments(issue.key)

        def posted_plan(comments: list[Comment]) -> dict[str, Any] | None:
            last = comments[-1] if comments else None
            if last and last.author_account_id == settings.jira_ai_account_id \
                    and PLAN_MARKER in last.body:
                plan = find_latest_plan([last])
                if plan is not None:  # posted by an earlier run, nothing new since
                    return {"comment_id": last.id, "found": True,
                            "subtasks": len(plan.subtasks), "only_questions": plan.only_questions}
            return None

        async def find_plan() -> dict[str, Any] | None:
            return posted_plan(await self.jira.get_comments(issue.key))

        async def post_plan() -> dict[str, Any]:
            found = posted_plan(comments)
            if found is not None:
                return found
            assert self._llm is not None
            run.step = "write the plan (LLM)"
            plan, replies = await write_plan(self._llm, issue, comments,
                                             settings.prompt_max_chars,
                                             settings.jira_ai_account_id)
            run.usage.add_replies(replies)
            run.step = "post the plan comment"
            comment_id = await self.jira.add_comment(issue.key, format_plan_comment(plan))
            return {"comment_id": comment_id, "subtasks": len(plan.subtasks),
                    "only_questions": plan.only_questions,
                    "input_tokens": sum(r.input_tokens for r in replies),
                    "output_tokens": sum(r.output_tokens for r in replies)}

        posted = await run.once("plan_comment", f"Plan posted on {issue.key}", post_plan,
                                find=find_plan)
        target = (settings.jira_status_blocked if posted.get("only_questions")
                  else settings.jira_status_plan_review)
        await self.updates.transition(run, issue.key, target, "plan_transition")
        await self.updates.assign(run, issue.key, settings.jira_human_account_id, "plan_assign")

    async def _start_subtasks(self, run: RunJournal, parent: Issue, decision: Decision) -> None:
        settings = self.settings
        async with self._parent_lock(parent.key):
            run.step = "read the plan"
            comments = await self.jira.get_comments(parent.key)
            plan = find_latest_plan(comments)
            if plan is None or not plan.subtasks:
                raise PermanentError(
                    f"{parent.key} has no approved plan with sub-tasks (a comment with "
                    f"{PLAN_MARKER}): move it to {settings.jira_status_backlog} and assign it "
                    "to the AI account to get a plan first")
            run.step = "list the sub-tasks"
            available = await self.jira.list_subtasks(parent.key)
            keys: list[str] = []
            created: list[str] = []
            for number, planned in enumerate(plan.subtasks, start=1):
                step = f"subtask_{number}"
                previous = run.result(step)
                if previous is None:
                    match = next((s for s in available
                                  if s.summary.strip() == planned.summary.strip()), None)
                    if match is not None:
                        previous = await run.journal(step, f"Sub-task {match.key} already "
                                                     "exists", key=match.key, found=True)
                    else:
                        previous = await self.updates.create_subtask(
                            run, parent, planned.summary, planned.description, step,
                            [s.key for s in available])
                        if not previous.get("found"):
                            created.append(str(previous["key"]))
                keys.append(str(previous["key"]))
                available = [s for s in available if s.key != previous["key"]]
            # Only the sub-task it starts is assigned (start_next): the others wait
            # unassigned, and one under review or done stays with its reviewer.
            run.step = "list the sub-tasks"
            siblings = await self.jira.list_subtasks(parent.key)
            started = await self.updates.start_next(run, siblings, current_key=None,
                                                    candidates=keys)
            if created or started:
                lines = [f"mwai created {len(created)} sub-task(s) from the approved plan:"]
                lines += [f"- {key}" for key in keys]
                if started:
                    lines.append(f"Started {started}; each sub-task's change goes to one pull "
                                 "request for this ticket.")
                await self.updates.comment(run, parent.key, "\n".join(lines), "start_comment",
                                           comments)

    async def _execute(self, run: RunJournal, sub: Issue, decision: Decision) -> None:
        settings, ctx = self.settings, run.ctx
        async with self._parent_of(run, sub, "read the parent and the comments") as parent:
            plan = find_latest_plan(await self.jira.get_comments(parent.key))
            comments = await self.jira.get_comments(sub.key)
            run.step = "resolve the repository"
            repo = resolve_repo(RepoSources.of(settings), parent.project_key)
            branch = branch_name(parent.key, parent.summary)
            await ctx.record(branch=branch)
            pushed = run.result("push")
            if pushed is None:
                feedback = feedback_since_last_ai_comment(comments, settings.jira_ai_account_id)
                prompt = build_prompt(sub, parent, plan, feedback, settings.prompt_max_chars)
                pushed = await self._change_and_push(run, sub, repo, branch, prompt, comments)
                if pushed is None:
                    return
            agent = run.result("agent") or {}
            pr = await self._open_pr(run, parent, repo, branch, pushed, agent)
            await ctx.record(pr_url=pr["pr_url"])
            updates = self.updates
            await updates.comment(run, sub.key, report.result_comment(branch, pr, pushed, agent),
                                  "result_comment", comments)
            await updates.transition(run, sub.key, settings.jira_status_in_testing,
                                     "execute_transition")
            await updates.assign(run, sub.key, settings.jira_human_account_id, "execute_assign")
            run.step = "start the next sub-task"
            await updates.start_next(run, await self.jira.list_subtasks(parent.key), sub.key)

    async def _change_and_push(self, run: RunJournal, sub: Issue, repo: RepoConfig, branch: str,
                               prompt: str, comments: list[Comment]) -> dict[str, Any] | None:
        """Agent -> commit -> push in a fresh worktree; None when there is nothing to push."""
        run.step = "prepare the worktree"
        self.git.use_token(await self.github.token())
        worktree = await self.git.prepare(repo, branch, run.id,
                                          f"{run.ctx.run.attempts}-{secrets.token_hex(3)}")
        keep = False
        try:
            sha = await self._pushed_by_this_run(worktree, run.ids)
            if sha is not None:
                return await run.journal("push", f"Commit {sha[:12]} already on origin",
                                         commit=sha, branch=branch, found=True)
            run.step = "run the agent, then the checks"
            hidden = self.settings.secret_values()
            on_tool = tool_events(run.ctx.event, hidden)
            verified = await verify_change(
                lambda text: self._run_agent(AgentConfig.of(self.settings), worktree.path,
                                             text, self._llm, on_tool=on_tool),
                prompt, worktree.path, ChecksConfig.of(self.settings, repo), hidden, run.ctx)
            for each in verified.agents:
                run.usage.add(each.cost_usd, each.input_tokens, each.output_tokens)
            result = verified.agent
            await run.journal("agent", f"Agent finished (exit {result.exit_code})",
                              **report.journal_fields(verified, hidden))
            if result.exit_code == 0 and not verified.passed:
                keep = True  # for inspection; removed with the other stale worktrees
                await self.updates.blocked(run, sub, scrub(report.blocked_text(
                    sub.key, verified, self.settings.jira_status_in_progress), hidden), comments)
                return None
            sha = None
            if result.exit_code == 0:
                run.step = "commit"
                message = f"{sub.key}: {sub.summary}\n\n{RUN_TRAILER}: {run.id}\n"
                sha = await self.git.commit_all(worktree, message)
            if sha is None:
                await self.updates.agent_blocked(run, sub, result, comments)
                return None
            run.step = "push"
            ids = "|".join(str(run_id) for run_id in run.ids)
            sha = await self.git.push(worktree, f"^{RUN_TRAILER}: ({ids})$")
            return await run.journal("push", f"Pushed {sha[:12]} to {branch}", commit=sha,
                                     branch=branch, files=await self.git.changed_files(worktree))
        finally:
            if keep:
                log.info("Kept the worktree for inspection", extra={"path": str(worktree.path)})
            else:
                try:
                    await self.git.remove(worktree)
                except Exception as exc:
                    log.warning("Could not remove the worktree", extra={
                        "path": str(worktree.path), "error": str(exc)})

    async def _pushed_by_this_run(self, worktree: Worktree, run_ids: list[int]) -> str | None:
        """The commit an earlier attempt of this run pushed (found by its trailer)."""
        if worktree.created_branch:
            return None
        ids = "|".join(str(run_id) for run_id in run_ids)
        return await self.git.find_commit(worktree, f"^{RUN_TRAILER}: ({ids})$")

    async def _open_pr(self, run: RunJournal, parent: Issue, repo: RepoConfig, branch: str,
                       pushed: dict[str, Any], agent: dict[str, Any]) -> dict[str, Any]:
        async def open_pr() -> dict[str, Any]:
            siblings = await self.jira.list_subtasks(parent.key)
            body = "\n".join([
                f"Implements {parent.key}: {parent.summary}", "",
                "Sub-tasks (one commit each, by mwai):",
                *[f"- {s.key}: {s.summary}" for s in siblings],
                "", "A draft (where drafts are allowed) until every sub-task is Done in Jira.",
                "", f"Files changed by the last sub-task ({run.ctx.run.issue_key}):",
                *[f"- `{f}`" for f in pushed.get("files", [])], "",
                str(agent.get("checks_summary", "")), report.markdown_table(agent.get("checks",
                                                                                       [])),
            ])
            pr, created = await self.github.open_or_update_pr(
                repo.github_repo, branch, repo.base_branch, f"{parent.key}: {parent.summary}",
                body, draft=True)
            return {"pr_url": pr.url, "pr_number": pr.number, "created": created}
        return await run.once("pull_request", "Pull request opened or updated", open_pr)

    async def _subtask_done(self, run: RunJournal, sub: Issue, decision: Decision) -> None:
        settings, ctx = self.settings, run.ctx
        async with self._parent_of(run, sub, "read the parent") as parent:
            if same_status(parent.status, settings.jira_status_done) \
                    and run.result("parent_done") is None:
                await ctx.event(f"Parent {parent.key} is already {parent.status}")
                return
            siblings = await self.jira.list_subtasks(parent.key)
            waiting = [s.key for s in siblings
                       if not same_status(s.status, settings.jira_status_done)]
            if waiting:
                await ctx.event("Waiting for the other sub-tasks", waiting=waiting)
                # The run that was to start the next one may have been cut short (a crash,
                # then a person's review while mwai was down): start it here, if need be.
                await self.updates.start_next(run, siblings, current_key=sub.key)
                return
            repo = resolve_repo(RepoSources.of(settings), parent.project_key)
            branch = branch_name(parent.key, parent.summary)
            run.step = "find the pull request"
            pr = await self.github.find_pr(repo.github_repo, branch)
            if pr is None:
                await ctx.event(f"No open pull request for {branch}", level="warning")
            else:
                await ctx.record(branch=branch, pr_url=pr.url)
                if pr.draft:
                    async def ready() -> dict[str, Any]:
                        await self.github.mark_ready(repo.github_repo, pr)
                        return {"pr_url": pr.url}
                    await run.once("pr_ready", "Pull request marked ready for review", ready)
            lines = [f"All {len(siblings)} sub-task(s) of {parent.key} are Done."]
            if pr is not None:
                lines.append(f"Pull request ready for review: {pr.url}")
            lines.append(f"mwai moved {parent.key} to {settings.jira_status_done}. {DONE_MARKER}")
            run.step = "read the parent's comments"
            comments = await self.jira.get_comments(parent.key)
            await self.updates.comment(run, parent.key, "\n".join(lines), "done_comment",
                                       comments, marker=DONE_MARKER)
            await self.updates.transition(run, parent.key, settings.jira_status_done, "parent_done")
