"""Run Hearth's playbooks through ansible-runner.

Progress comes from runner events (never from parsing stdout); the recap and the exit code come
from ``runner.stats`` / ``runner.status``. Every run keeps its artifacts in its own folder under
``$HEARTH_HOME/runs`` (runner env files suppressed, so no extra variables or passwords land there).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hearth import paths
from hearth.errors import EnvironmentProblem, InvalidInputError, RunFailedError, UnreachableError

STAT_KEYS = ("ok", "changed", "failures", "dark", "skipped", "rescued", "ignored")


@dataclass(frozen=True)
class Tuning:
    """Connection and execution settings. ``Tuning.ansible_defaults()`` is Ansible untouched."""

    forks: int = 25
    pipelining: bool = True
    control_persist: str = "15m"
    fact_caching: bool = True
    fact_cache_timeout: int = 7200
    # "mitogen" (Mitogen for Ansible's mitogen_linear: the default wherever it can run,
    # :func:`default_strategy`) or "linear" (Ansible's own); `hearth up --strategy`, or
    # $HEARTH_STRATEGY for every run of a process (there a Mitogen that cannot run is an error).
    strategy: str = field(
        default_factory=lambda: os.environ.get("HEARTH_STRATEGY") or default_strategy()
    )
    # Either strategy through Hearth's own plugin (plugins/strategy/hearth_*linear.py): a task
    # whose `when` is false is skipped, and one whose action never reaches the host (set_fact,
    # debug, assert, includes ...) runs, in ansible-playbook's own process, without forking a
    # worker (plugins/plugin_utils/hearth_strategy.py). False: Ansible's or Mitogen's strategy
    # untouched.
    work_on_controller: bool = True

    @classmethod
    def ansible_defaults(cls) -> Tuning:
        # Ansible's own defaults: 5 forks, no pipelining, ControlPersist=60s, facts gathered
        # on every play (no cache), every task through a worker.
        return cls(
            forks=5,
            pipelining=False,
            control_persist="60s",
            fact_caching=False,
            work_on_controller=False,
        )


STRATEGIES = ("linear", "mitogen")
# The ansible-core releases Hearth has run Mitogen with (the lab's no-op and first converges,
# benchmarks/converge.py); Mitogen's own ceiling (ansible_mitogen/loaders.py) is checked as well.
MITOGEN_ANSIBLE_CORE = ((2, 17), (2, 19))


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def mitogen_strategy_dir() -> Path | None:
    """Where the installed Mitogen keeps its strategy plugins, or None (not installed)."""
    import importlib.util

    spec = importlib.util.find_spec("ansible_mitogen")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "plugins" / "strategy"
    return folder if (folder / "mitogen_linear.py").is_file() else None


def mitogen_problem() -> str:
    """Why ``--strategy mitogen`` cannot run with this control node, or "" when it can: Mitogen
    installed, and this ansible-core inside both Mitogen's supported range and Hearth's tested
    one. Read without importing Mitogen (its loader refuses an unsupported Ansible on import)."""
    from ansible.release import __version__ as core

    folder = mitogen_strategy_dir()
    if folder is None:
        return "Mitogen is not installed (pip install 'mitogen>=0.3.25')"
    loaders = (folder.parent.parent / "loaders.py").read_text()
    low = re.search(r"ANSIBLE_VERSION_MIN\s*=\s*\((\d+),\s*(\d+)\)", loaders)
    high = re.search(r"ANSIBLE_VERSION_MAX\s*=\s*\((\d+),\s*(\d+)\)", loaders)
    have = _version(core)[:2]
    if low is None:
        return "the installed Mitogen does not declare the ansible-core releases it supports"
    # Mitogen up to 0.3.2x declares a ceiling too; later releases (0.3.54) only a floor, and
    # Hearth's own tested range below is then the ceiling
    ceiling = (int(high[1]), int(high[2])) if high else MITOGEN_ANSIBLE_CORE[1]
    mitogen_range = ((int(low[1]), int(low[2])), ceiling)
    for (first, last), whose in (
        (mitogen_range, "the installed Mitogen supports"),
        (MITOGEN_ANSIBLE_CORE, "Hearth has run Mitogen with"),
    ):
        if not first <= have <= last:
            span = f"{'.'.join(map(str, first))} to {'.'.join(map(str, last))}"
            return f"ansible-core {core} is outside the releases {whose} ({span})"
    return ""


def default_strategy() -> str:
    """ "mitogen" where it can run (:func:`mitogen_problem`), else "linear": the whole integration
    suite runs with Mitogen, and in benchmarks/converge.py a first converge took 0.71–0.81× as
    long as with linear and a run that changed nothing 0.42–0.63× (two runs, docs/converge.md)."""
    return "linear" if mitogen_problem() else "mitogen"


def ansible_env(tuning: Tuning | None = None, inventory: Path | None = None) -> dict[str, str]:
    """Environment for ansible-playbook/ansible: Hearth's content paths and the tuning (the fact
    cache is the inventory's own: :func:`hearth.paths.facts_dir`)."""
    tuning = tuning or Tuning()
    plugins = paths.plugins_dir()
    env = {
        "ANSIBLE_ROLES_PATH": str(paths.roles_dir()),
        "ANSIBLE_COLLECTIONS_PATH": str(paths.collections_dir()),
        "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "False",
        "ANSIBLE_LIBRARY": str(plugins / "modules"),
        "ANSIBLE_MODULE_UTILS": str(plugins / "module_utils"),
        "ANSIBLE_ACTION_PLUGINS": str(plugins / "action"),
        "ANSIBLE_FILTER_PLUGINS": str(plugins / "filter"),
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        # Facts only under ansible_facts (the roles read nothing else): ansible-core 2.19
        # deprecates the top-level copies, and making them costs the controller about 7 ms
        # for every task on every host (docs/converge.md).
        "ANSIBLE_INJECT_FACT_VARS": "False",
        "ANSIBLE_INTERPRETER_PYTHON": "auto_silent",
        "ANSIBLE_FORKS": str(tuning.forks),
        "ANSIBLE_PIPELINING": str(tuning.pipelining),
        "ANSIBLE_SSH_ARGS": (
            f"-C -o ControlMaster=auto -o ControlPersist={tuning.control_persist} "
            "-o ServerAliveInterval=15"
        ),
        "ANSIBLE_TIMEOUT": "20",
    }
    hearth_strategies = str(plugins / "strategy")
    if tuning.strategy == "mitogen":
        folder = mitogen_strategy_dir()
        problem = mitogen_problem()
        if folder is None or problem:
            raise EnvironmentProblem(f"--strategy mitogen: {problem}")
        if tuning.work_on_controller:  # Hearth's subclass of mitogen_linear, found after it
            env |= {
                "ANSIBLE_STRATEGY_PLUGINS": os.pathsep.join((hearth_strategies, str(folder))),
                "ANSIBLE_STRATEGY": "hearth_mitogen_linear",
            }
        else:
            env |= {"ANSIBLE_STRATEGY_PLUGINS": str(folder), "ANSIBLE_STRATEGY": "mitogen_linear"}
    elif tuning.strategy != "linear":
        raise InvalidInputError(
            f"--strategy {tuning.strategy}: expected one of {', '.join(STRATEGIES)}"
        )
    elif tuning.work_on_controller:
        env |= {"ANSIBLE_STRATEGY_PLUGINS": hearth_strategies, "ANSIBLE_STRATEGY": "hearth_linear"}
    env["HEARTH_WORK_ON_CONTROLLER"] = "1" if tuning.work_on_controller else "0"
    if tuning.fact_caching:
        env |= {
            "ANSIBLE_GATHERING": "smart",
            "ANSIBLE_CACHE_PLUGIN": "jsonfile",
            "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(paths.facts_dir(inventory)),
            "ANSIBLE_CACHE_PLUGIN_TIMEOUT": str(tuning.fact_cache_timeout),
        }
    return env


@dataclass
class HostResult:
    host: str
    ok: int = 0
    changed: int = 0
    failed: int = 0
    unreachable: int = 0
    skipped: int = 0
    rescued: int = 0
    ignored: int = 0


@dataclass
class RunResult:
    status: str
    rc: int
    artifacts: Path
    hosts: dict[str, HostResult] = field(default_factory=dict)
    failures: list[tuple[str, str, str]] = field(default_factory=list)  # host, task, message
    unreachable: dict[str, str] = field(default_factory=dict)  # host → message

    @property
    def changed(self) -> int:
        return sum(h.changed for h in self.hosts.values())

    @property
    def failed_hosts(self) -> list[str]:
        return sorted(h.host for h in self.hosts.values() if h.failed)

    @property
    def unreachable_hosts(self) -> list[str]:
        return sorted(h.host for h in self.hosts.values() if h.unreachable)

    def raise_for_status(self) -> None:
        if self.failed_hosts:
            detail = "; ".join(f"{h}: {t}: {m}" for h, t, m in self.failures[:10])
            raise RunFailedError(
                f"the run failed on {', '.join(self.failed_hosts)} — {detail} "
                f"(artifacts: {self.artifacts})"
            )
        if self.unreachable_hosts:
            gone = [self.unreachable[h] for h in self.unreachable_hosts
                    if " went away during " in self.unreachable.get(h, "")]  # fmt: skip
            lost = [h for h in self.unreachable_hosts if " went away during " not in
                    self.unreachable.get(h, "")]  # fmt: skip
            what = "; ".join([*gone, *([f"unreachable: {', '.join(lost)}"] if lost else [])])
            raise UnreachableError(
                f"{what} — the other hosts were converged; check that each is up and that SSH "
                f"reaches it, then run again (artifacts: {self.artifacts})"
            )
        if self.status != "successful" or self.rc != 0:
            raise RunFailedError(
                f"ansible-playbook ended with status {self.status} (rc={self.rc}); see "
                f"{self.artifacts}/stdout"
            )


@dataclass(frozen=True)
class TaskEvent:
    """One host's result for one task, as the progress display needs it."""

    host: str
    status: str  # ok | changed | failed | unreachable | skipped | ignored | notice | diff
    task: str
    role: str
    message: str = ""  # for "diff": the unified diff of the change (``--diff``)


EventSink = Callable[[TaskEvent], None]


NOTICE_PREFIXES = ("SKIPPED", "WARNING", "REBOOT NEEDED", "NOTICE")


def _notice(data: Mapping[str, Any], res: Mapping[str, Any]) -> str:
    """A role's report to the operator: a debug message starting with SKIPPED, WARNING, … ."""
    if str(data.get("task_action", "")).rsplit(".", 1)[-1] != "debug":
        return ""
    msg = res.get("msg")
    text = " ".join(str(m) for m in msg) if isinstance(msg, list) else str(msg or "")
    return text.strip() if text.lstrip().startswith(NOTICE_PREFIXES) else ""


def diff_text(diff: Any) -> str:
    """A task's ``diff`` (as modules return it, one dict or a list) as unified diff text, the way
    ``ansible-playbook --diff`` shows it."""
    import difflib

    parts: list[str] = []
    for item in diff if isinstance(diff, list) else [diff]:
        if not isinstance(item, Mapping):
            continue
        if item.get("prepared"):
            parts.append(str(item["prepared"]).rstrip("\n"))
            continue
        for side in ("src", "dst"):
            if item.get(f"{side}_binary"):
                parts.append(f"diff skipped: {side} is binary")
            if item.get(f"{side}_larger"):
                parts.append(f"diff skipped: {side} is larger than {item[f'{side}_larger']} bytes")
        if "before" not in item and "after" not in item:
            continue
        before, after = item.get("before", ""), item.get("after", "")
        if not isinstance(before, str) or not isinstance(after, str):
            import json as _json

            before = _json.dumps(before, indent=2, sort_keys=True, default=str) + "\n"
            after = _json.dumps(after, indent=2, sort_keys=True, default=str) + "\n"
        lines = difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=f"before: {item.get('before_header', '')}".rstrip(": ").rstrip(),
            tofile=f"after: {item.get('after_header', '')}".rstrip(": ").rstrip(),
            n=3,
        )
        text = "".join(line if line.endswith("\n") else line + "\n" for line in lines)
        if text:
            parts.append(text.rstrip("\n"))
    return "\n".join(parts)


# A module whose ssh session was cut (the host rebooted, was powered off, or its container
# stopped): Ansible reports it as a module failure with no JSON and the ssh client's last words.
_WENT_AWAY = re.compile(
    r"connection to \S+ closed|closed by remote host|connection reset by peer|"
    r"kex_exchange_identification|broken pipe\s*$",
    re.IGNORECASE | re.MULTILINE,
)


def went_away(res: Mapping[str, Any]) -> bool:
    """Whether a failed result is the host going away mid-task, not the module failing."""
    msg = str(res.get("msg") or "")
    if not msg.startswith("MODULE FAILURE") and "deserialization failed" not in msg.lower():
        return False
    if str(res.get("module_stdout") or "").strip():
        return False  # the module ran and said something: a real module failure
    stderr = str(res.get("module_stderr") or "")
    return res.get("rc") == 255 or _WENT_AWAY.search(stderr) is not None


def _event_to_task_event(event: Mapping[str, Any]) -> TaskEvent | None:
    kind = event.get("event", "")
    data = event.get("event_data") or {}
    host = data.get("host")
    if kind == "runner_on_file_diff" and host:
        # A no_log task's diff comes as null (censored); it is never shown.
        text = diff_text(data.get("diff")) if data.get("diff") else ""
        if not text:
            return None
        return TaskEvent(host, "diff", str(data.get("task", "")), str(data.get("role", "")), text)
    if not host or not kind.startswith("runner_on_") or kind == "runner_on_start":
        return None
    res = data.get("res") or {}
    if kind == "runner_on_ok":
        status = "changed" if res.get("changed") else "ok"
        notice = _notice(data, res)
        if notice:
            return TaskEvent(
                host, "notice", str(data.get("task", "")), str(data.get("role", "")), notice
            )
    elif kind == "runner_on_failed" and went_away(res):
        task = str(data.get("task", ""))
        return TaskEvent(host, "unreachable", task, str(data.get("role", "")),
                         f"{host} went away during {task}")  # fmt: skip
    elif kind == "runner_on_failed":
        status = "ignored" if data.get("ignore_errors") else "failed"
    elif kind == "runner_on_unreachable":
        status = "unreachable"
    elif kind == "runner_on_skipped":
        status = "skipped"
    else:
        return None
    message = ""
    if status in ("failed", "unreachable", "ignored"):
        message = str(res.get("msg") or res.get("stderr") or res.get("reason") or "").strip()
    return TaskEvent(
        host=host,
        status=status,
        task=str(data.get("task", "")),
        role=str(data.get("role", "")),
        message=message,
    )


class EventReader:
    """Task events from runner events, in order, remembering which hosts the run has reached:
    a reached host that turns unreachable went away during that task (powered off, rebooted,
    its container stopped), which is not the same news as a host never reached."""

    def __init__(self) -> None:
        self.reached: set[str] = set()

    def __call__(self, event: Mapping[str, Any]) -> TaskEvent | None:
        task_event = _event_to_task_event(event)
        if task_event is None:
            return None
        if task_event.status == "unreachable" and task_event.host in self.reached:
            gone = f"{task_event.host} went away during {task_event.task}"
            return dataclasses.replace(task_event, message=gone)
        if task_event.status in ("ok", "changed", "notice", "failed", "ignored"):
            self.reached.add(task_event.host)
        return task_event


def new_run_dir(label: str) -> Path:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    run_dir = paths.runs_dir() / f"{stamp}-{label}"
    run_dir.mkdir(parents=True, exist_ok=False)
    return run_dir


def run_playbook(
    playbook: str | Path,
    inventory: Path | Sequence[Path],
    *,
    limit: str | None = None,
    tags: str | None = None,
    skip_tags: str | None = None,
    check: bool = False,
    diff: bool = False,
    extravars: Mapping[str, Any] | None = None,
    vault_password_file: Path | None = None,
    tuning: Tuning | None = None,
    on_event: EventSink | None = None,
    label: str = "up",
    extra_env: Mapping[str, str] | None = None,
) -> RunResult:
    """Run one playbook (a name under playbooks/ or a path) and return what happened."""
    import ansible_runner

    tuning = tuning or Tuning()
    book = Path(playbook)
    if not book.is_absolute():
        book = paths.playbooks_dir() / book
    if not book.is_file():
        raise InvalidInputError(f"playbook {book} does not exist")
    sources = [inventory] if isinstance(inventory, Path) else list(inventory)
    for source in sources:
        if not source.exists():
            raise InvalidInputError(f"inventory {source} does not exist")
    if shutil.which("ansible-playbook") is None and not _venv_bin("ansible-playbook").exists():
        raise EnvironmentProblem("ansible-playbook is not installed in this environment")

    run_dir = new_run_dir(label)
    cmdline: list[str] = []
    if check:
        cmdline.append("--check")
    if diff:
        cmdline.append("--diff")
    if skip_tags:
        cmdline += ["--skip-tags", skip_tags]
    env = ansible_env(tuning, sources[0]) | dict(extra_env or {})
    if vault_password_file:
        # Through the environment, so the preflight's inventory validation can decrypt too.
        env["ANSIBLE_VAULT_PASSWORD_FILE"] = str(vault_password_file.resolve())
    bindir = str(_venv_bin("ansible-playbook").parent)
    env["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")

    read = EventReader()

    def handler(event: dict[str, Any]) -> bool:
        if on_event is not None:
            task_event = read(event)
            if task_event is not None:
                on_event(task_event)
        return True  # keep the event in the artifacts (no_log results are already censored)

    # Extra variables may hold secrets: ansible-runner would put them on the command line, which
    # it records in artifacts/<id>/command. They go through a private file outside the run dir.
    with tempfile.TemporaryDirectory(prefix="hearth-extravars-") as private:
        if extravars:
            vars_file = Path(private) / "extravars.json"
            vars_file.touch(mode=0o600)
            vars_file.write_text(json.dumps(dict(extravars)))
            cmdline += ["-e", f"@{vars_file}"]
        runner = ansible_runner.run(
            private_data_dir=str(run_dir),
            playbook=str(book),
            inventory=[str(s.resolve()) for s in sources],
            limit=limit,
            tags=tags,
            forks=tuning.forks,
            cmdline=" ".join(_quote(a) for a in cmdline) or None,
            envvars=env,
            # KNOWN DEFECT (docs/converge.md): ansible-runner sets ANSIBLE_CACHE_PLUGIN_CONNECTION
            # itself, to a directory in each run's artifacts, so the inventory's fact cache above
            # is never written and no fact outlives a run.
            suppress_env_files=True,
            quiet=True,
            event_handler=handler,
            project_dir=str(paths.content_root()),
        )
    scrub_artifacts(run_dir)
    return _collect(runner, run_dir)


def scrub_artifacts(run_dir: Path) -> None:
    """Drop the process environment ansible-runner records beside the command: it is the whole
    environment of the operator's shell, where tokens often live."""
    for command_file in run_dir.glob("artifacts/*/command"):
        try:
            data = json.loads(command_file.read_text())
        except (OSError, ValueError):
            command_file.unlink(missing_ok=True)
            continue
        data.pop("env", None)
        command_file.write_text(json.dumps(data))


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


def _venv_bin(name: str) -> Path:
    import sys

    return Path(sys.executable).parent / name


def _collect(runner: Any, run_dir: Path) -> RunResult:
    stats: dict[str, dict[str, int]] = runner.stats or {}
    result = RunResult(status=str(runner.status), rc=int(runner.rc or 0), artifacts=run_dir)
    hosts: set[str] = set()
    for key in STAT_KEYS:
        hosts.update((stats.get(key) or {}).keys())
    for host in sorted(hosts):
        result.hosts[host] = HostResult(
            host=host,
            ok=stats.get("ok", {}).get(host, 0),
            changed=stats.get("changed", {}).get(host, 0),
            failed=stats.get("failures", {}).get(host, 0),
            unreachable=stats.get("dark", {}).get(host, 0),
            skipped=stats.get("skipped", {}).get(host, 0),
            rescued=stats.get("rescued", {}).get(host, 0),
            ignored=stats.get("ignored", {}).get(host, 0),
        )
    read = EventReader()
    for event in runner.events:
        task_event = read(event)
        if task_event is None:
            continue
        if task_event.status == "failed":
            result.failures.append((task_event.host, task_event.task, task_event.message))
        elif task_event.status == "unreachable":
            result.unreachable[task_event.host] = task_event.message
            host_result = result.hosts.get(task_event.host)
            failed = event.get("event") == "runner_on_failed"
            if host_result is not None and failed and host_result.failed:
                # Ansible counted the cut session as a failed task: it is an unreachable host
                host_result.failed -= 1
                host_result.unreachable += 1
    return result
