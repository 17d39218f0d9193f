"""Python coding problems (MBPP / HumanEval style) with PKPO's reward: the fraction of unit tests passed.

Data: JSONL files, one problem per line, in any of three layouts (detected per row):

* HumanEval: ``prompt`` (signature + docstring), ``test`` (defines ``check(candidate)``),
  ``entry_point``. Every top-level statement of ``check`` that contains an ``assert`` is one unit test;
  the other statements, and the rest of ``test``, are setup. ``candidate`` is bound to the entry point.
* MBPP: ``text`` (or ``prompt``), ``test_list`` (one assert per test), optional ``test_setup_code``
  and ``code`` (the reference solution, used as ``target``). The prompt shows the first test.
* Generic: ``prompt``, ``tests`` (list of statements), optional ``setup``, ``entry_point``,
  ``solution``.

Extraction: the last fenced code block (```` ```python ... ``` ````, an unclosed last fence runs to
the end), else the raw completion. If the problem has an entry point that the extracted code does not
define, the code is treated as a continuation of the prompt (HumanEval style) and appended to it.

Harness (the candidate cannot reach it). The candidate's code runs in the sandbox
(:mod:`passk_jax.tasks.sandbox`, at least :data:`~passk_jax.tasks.sandbox.FULL_ISOLATION` by default)
inside a small *function server* that only answers "call function ``name`` with these arguments".
The tests, the setup code and the counting run in the scorer's own interpreter, which the candidate
never shares: each test is executed there with the names it uses bound to proxies that send the
arguments to the sandbox over a pipe and get back the *value* of the call, encoded as data (``None``,
``bool``, ``int``, ``float``, ``complex``, ``str``, ``bytes``, and ``list`` / ``tuple`` / ``dict`` /
``set`` / ``frozenset`` of those; generators and other iterators are drained into a list, at most
100,000 items) and rebuilt there as fresh builtin objects. So:

* nothing the candidate does to its own interpreter (replacing ``builtins``, walking frames, ``gc``,
  ``atexit``, ``__del__``, signals, ``os._exit``) touches the tests or the count;
* a returned object cannot lie about equality: only plain data crosses, and the comparison in the
  test runs on the rebuilt builtin values (an object of any other type is an error, so the test fails);
* output volume never decides the score: stdout / stderr are drained and ignored, the values travel
  on their own pipe.

A test passes when it runs to completion in the scorer (no exception); a test that times out
(``per_test_s``), or whose call crashes the server, fails, and the server is restarted for the next
test. Exceptions raised by the candidate are re-raised in the test as the builtin exception of the same
name (e.g. ``ValueError``), so ``pytest.raises``-style tests work. The reward is ``passed / total``.

What crosses only as data also limits what can be tested: a test that passes a function or an object
to the candidate, or expects an instance of a class the solution defines, fails. Helper functions that
HumanEval prompts define (e.g. ``poly`` in HumanEval/32) are executed from the prompt (dataset code) in
the scorer, so the candidate cannot redefine them for the tests.
"""

from __future__ import annotations

import ast
import builtins
import json
import os
import re
import select
import struct
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from passk_jax.tasks.base import Prompt, TaskBase
from passk_jax.tasks.sandbox import (
    FULL_ISOLATION,
    IsolationError,
    SandboxLimits,
    SandboxProcess,
    _refusal,
    isolation_available,
    parse_isolation,
    unprotected,
)

__all__ = [
    "DEFAULT_LIMITS",
    "CodeTask",
    "build_program",
    "decode_value",
    "encode_value",
    "extract_code",
    "problem_from_row",
    "run_tests",
]

DEFAULT_LIMITS = SandboxLimits(timeout_s=10.0, cpu_s=10)
_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 100
MAX_ITEMS = 100_000
# Stdlib modules the tests may use without importing them (MBPP tests run in the solution's
# namespace, so they rely on the solution's imports); they are imported in the scorer, never
# taken from the candidate.
_SAFE_MODULES = frozenset(
    "math cmath re string collections itertools functools operator heapq bisect statistics "
    "fractions decimal random copy datetime typing array numbers".split()
)

# The function server: runs in the sandbox as main.py. Everything in it is under the candidate's
# control once the solution runs; it only ever sends data, which the scorer decodes and checks.
_SERVER = r"""
import json, os, struct, sys, types
_rd, _wr = os.fdopen(3, "rb", buffering=0), os.fdopen(4, "wb", buffering=0)
MAX_DEPTH, MAX_ITEMS = {max_depth}, {max_items}

def _send(obj):
    data = json.dumps(obj).encode()
    _wr.write(struct.pack("<Q", len(data)) + data)

def _recv():
    head = b""
    while len(head) < 8:
        more = _rd.read(8 - len(head))
        if not more:
            os._exit(0)
        head += more
    n = struct.unpack("<Q", head)[0]
    buf = bytearray()
    while len(buf) < n:
        more = _rd.read(n - len(buf))
        if not more:
            os._exit(0)
        buf += more
    return json.loads(bytes(buf))

class Unencodable(TypeError):
    pass

def enc(x, depth=0):
    # Subclasses (Counter, defaultdict, namedtuple, ...) are sent as their builtin base: the
    # scorer rebuilds plain builtins either way, so nothing here needs to be trusted.
    if depth > MAX_DEPTH:
        raise Unencodable("too deep")
    if x is None or type(x) is bool:
        return x
    if isinstance(x, str):
        return str.__str__(x)
    if isinstance(x, int):
        v = int.__index__(x)
        return ["i", str(v)] if abs(v) > 2**53 else v
    if isinstance(x, float):
        return ["f", float.__repr__(x)]
    if isinstance(x, complex):
        return ["c", float.__repr__(x.real), float.__repr__(x.imag)]
    if isinstance(x, (bytes, bytearray)):
        return ["b", bytes(x).hex()]
    for base, tag in ((list, "l"), (tuple, "t"), (set, "s"), (frozenset, "z")):
        if isinstance(x, base):
            return [tag] + [enc(v, depth + 1) for v in base.__iter__(x)]
    if isinstance(x, dict):
        return ["d"] + [[enc(k, depth + 1), enc(v, depth + 1)] for k, v in dict.items(x)]
    t = type(x)
    if isinstance(x, (types.GeneratorType, map, filter, zip, enumerate, reversed)) or (
        t.__name__.endswith("iterator")
    ):
        out = []
        for v in x:
            if len(out) >= MAX_ITEMS:
                raise Unencodable("iterator too long")
            out.append(enc(v, depth + 1))
        return ["l"] + out
    raise Unencodable("cannot return a %s" % t.__name__)

def dec(x):
    if isinstance(x, list):
        tag, rest = x[0], x[1:]
        if tag == "i":
            return int(rest[0])
        if tag == "f":
            return float(rest[0])
        if tag == "c":
            return complex(float(rest[0]), float(rest[1]))
        if tag == "b":
            return bytes.fromhex(rest[0])
        if tag == "d":
            return {{dec(k): dec(v) for k, v in rest}}
        items = [dec(v) for v in rest]
        return {{"l": list, "t": tuple, "s": set, "z": frozenset}}[tag](items)
    return x

_ns = {{"__name__": "solution", "__builtins__": __builtins__}}
try:
    exec(compile({solution!r}, "solution.py", "exec"), _ns)
    _loaded = None
except BaseException as e:
    _loaded = type(e).__name__
names = {{}}
for k, v in list(_ns.items()):
    if k.startswith("__"):
        continue
    if isinstance(v, types.ModuleType):
        names[k] = ["module", getattr(v, "__name__", "")]
    elif callable(v):
        names[k] = ["callable"]
    else:
        try:
            names[k] = ["value", enc(v)]
        except Exception:
            pass
_send({{"loaded": _loaded, "names": names}})
while True:
    req = _recv()
    try:
        fn = _ns[req["name"]]
        args = [dec(a) for a in req["args"]]
        kwargs = {{k: dec(v) for k, v in req["kwargs"]}}
        out = fn(*args, **kwargs)
        reply = {{"ok": enc(out), "args": [enc(a) if type(a) in (list, dict, set) else None
                                           for a in args]}}
    except BaseException as e:
        reply = {{"exc": type(e).__name__, "msg": str(e)[:200]}}
    _send(reply)
"""


def extract_code(completion: str) -> str:
    """The last fenced code block of ``completion`` (unclosed last fence: to the end), else the text."""
    if not isinstance(completion, str):
        return ""
    blocks = _FENCE.findall(completion)
    return blocks[-1] if blocks else completion


def _defines(code: str, name: str) -> bool:
    """Whether some line of ``code`` starts (after indentation) a ``def name(`` (linear time)."""
    pattern = re.compile(rf"(?:async[ \t]+)?def[ \t]+{re.escape(name)}[ \t]*\(")
    return any(pattern.match(line.lstrip()) for line in code.splitlines())


def _split_check(test_code: str) -> tuple[str, list[str]]:
    """HumanEval ``test`` source -> (setup source, one source string per assert-bearing statement)."""
    module = ast.parse(test_code)
    setup_nodes, tests = [], []
    for node in module.body:
        if isinstance(node, ast.FunctionDef) and node.name == "check":
            body_setup = []
            for stmt in node.body:
                if any(isinstance(n, ast.Assert) for n in ast.walk(stmt)):
                    tests.append(ast.unparse(stmt))
                else:
                    body_setup.append(ast.unparse(stmt))
            setup_nodes.append("\n".join(body_setup))
        else:
            setup_nodes.append(ast.unparse(node))
    return "\n".join(setup_nodes), tests


def problem_from_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """Normalise one JSONL row to ``{prompt, tests, setup, entry_point, solution, continuation}``."""
    if "test" in row and "entry_point" in row:  # HumanEval
        setup, tests = _split_check(row["test"])
        return {
            "prompt": row["prompt"],
            "tests": tests,
            "setup": setup,
            "entry_point": row["entry_point"],
            "solution": row["prompt"] + row["canonical_solution"]
            if "canonical_solution" in row
            else None,
            "continuation": True,
        }
    if "test_list" in row:  # MBPP
        tests = list(row["test_list"])
        text = row.get("text", row.get("prompt", ""))
        prompt = f"{text}\nYour code should pass this test:\n{tests[0]}\n" if tests else text
        return {
            "prompt": prompt,
            "tests": tests,
            "setup": row.get("test_setup_code", "") or "",
            "entry_point": None,
            "solution": row.get("code"),
            "continuation": False,
        }
    return {
        "prompt": row["prompt"],
        "tests": list(row["tests"]),
        "setup": row.get("setup", "") or "",
        "entry_point": row.get("entry_point"),
        "solution": row.get("solution"),
        "continuation": bool(row.get("continuation", False)),
    }


def solution_code(problem: Mapping[str, Any], completion: str) -> str:
    """The candidate's program: the extracted code, or the prompt + completion (continuation)."""
    code = extract_code(completion)
    entry = problem.get("entry_point")
    if entry and not _defines(code, entry):
        code = problem["prompt"] + completion
    return code


def build_program(problem: Mapping[str, Any], completion: str) -> str:
    """The sandbox program: the function server with the candidate's solution inside it."""
    return _SERVER.format(
        solution=solution_code(problem, completion), max_depth=MAX_DEPTH, max_items=MAX_ITEMS
    )


# ------------------------------------------------------------------------------------------------
# Values as data (scorer side: encodes trusted arguments, decodes and checks candidate results).
# ------------------------------------------------------------------------------------------------


class CandidateError(Exception):
    """The candidate's call failed or returned something that is not plain data."""


class _TestTimeout(BaseException):
    """A test ran out of time (BaseException: a test's ``except Exception`` cannot swallow it)."""


class _ServerDied(BaseException):
    """The function server crashed or broke the protocol (the test fails; restart it)."""


def encode_value(x: Any, depth: int = 0) -> Any:
    """Encode a plain-data value for the wire (``TypeError`` for anything else)."""
    if depth > MAX_DEPTH:
        raise TypeError("value nested too deeply")
    t = type(x)
    if x is None or t is bool or t is str:
        return x
    if t is int:
        return ["i", str(x)] if abs(x) > 2**53 else x
    if t is float:
        return ["f", repr(x)]
    if t is complex:
        return ["c", repr(x.real), repr(x.imag)]
    if t is bytes:
        return ["b", x.hex()]
    if t in (list, tuple, set, frozenset):
        tag = {list: "l", tuple: "t", set: "s", frozenset: "z"}[t]
        return [tag] + [encode_value(v, depth + 1) for v in x]
    if t is dict:
        return ["d"] + [
            [encode_value(k, depth + 1), encode_value(v, depth + 1)] for k, v in x.items()
        ]
    raise TypeError(f"cannot send a {t.__name__} to the candidate")


def decode_value(x: Any, depth: int = 0) -> Any:
    """Rebuild a value from the wire as fresh builtin objects; ``CandidateError`` if malformed."""
    if depth > MAX_DEPTH:
        raise CandidateError("value nested too deeply")
    t = type(x)
    if x is None or t is bool or t is str:
        return x
    if t is int:
        return x
    if t is not list or not x or type(x[0]) is not str:
        raise CandidateError(f"malformed value of type {t.__name__}")
    tag, rest = x[0], x[1:]
    try:
        if tag == "i" and len(rest) == 1 and type(rest[0]) is str:
            return int(rest[0])
        if tag == "f" and len(rest) == 1 and type(rest[0]) is str:
            return float(rest[0])
        if tag == "c" and len(rest) == 2 and all(type(r) is str for r in rest):
            return complex(float(rest[0]), float(rest[1]))
        if tag == "b" and len(rest) == 1 and type(rest[0]) is str:
            return bytes.fromhex(rest[0])
    except ValueError as e:
        raise CandidateError(f"malformed {tag!r} value") from e
    if len(rest) > MAX_ITEMS * 10:
        raise CandidateError("too many items")
    if tag == "d":
        out = {}
        for pair in rest:
            if type(pair) is not list or len(pair) != 2:
                raise CandidateError("malformed dict item")
            key = decode_value(pair[0], depth + 1)
            try:
                out[key] = decode_value(pair[1], depth + 1)
            except TypeError as e:  # unhashable key
                raise CandidateError("unhashable dict key") from e
        return out
    kinds = {"l": list, "t": tuple, "s": set, "z": frozenset}
    if tag not in kinds:
        raise CandidateError(f"unknown tag {tag!r}")
    items = [decode_value(v, depth + 1) for v in rest]
    try:
        return kinds[tag](items)
    except TypeError as e:
        raise CandidateError("unhashable set item") from e


def _raise_like(name: Any, msg: Any) -> None:
    cls = getattr(builtins, name, None) if type(name) is str else None
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        cls = CandidateError
    raise cls(str(msg)[:200] if type(msg) is str else "")


# ------------------------------------------------------------------------------------------------
# The scorer side of one problem.
# ------------------------------------------------------------------------------------------------


class _Server:
    """One sandboxed function server and the scorer's end of its pipes."""

    def __init__(self, program: str, limits: SandboxLimits, min_isolation: Sequence[str]):
        req_r, self.req_w = os.pipe()
        self.resp_r, resp_w = os.pipe()
        try:
            self.proc = SandboxProcess(program, limits, min_isolation, pass_fds=(req_r, resp_w))
        finally:
            os.close(req_r)
            os.close(resp_w)
        self.dead = False
        report = self.proc.isolation_report()
        if report.get("missing"):
            self.close()
            self.proc.result()  # raises IsolationError with the launcher's explanation
            raise IsolationError("the sandbox refused to run")  # pragma: no cover
        if not report:  # no report in time (overloaded machine, launcher crash): this run fails
            self.close()

    def send(self, obj: Any, deadline: float) -> None:
        data = json.dumps(obj).encode()
        view = memoryview(struct.pack("<Q", len(data)) + data)
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _TestTimeout()
            _, ready, _ = select.select([], [self.req_w], [], left)
            if ready:
                try:
                    n = os.write(self.req_w, view[: 1 << 16])
                except OSError as e:
                    raise _ServerDied() from e
                view = view[n:]

    def _read_exact(self, n: int, deadline: float) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _TestTimeout()
            ready, _, _ = select.select([self.resp_r], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.resp_r, min(n - len(buf), 1 << 20))
                except OSError as e:
                    raise _ServerDied() from e
                if not chunk:
                    raise _ServerDied()
                buf += chunk
        return bytes(buf)

    def recv(self, deadline: float) -> Any:
        (n,) = struct.unpack("<Q", self._read_exact(8, deadline))
        if n > MAX_MESSAGE_BYTES:
            raise _ServerDied()
        try:
            return json.loads(self._read_exact(n, deadline))
        except (ValueError, RecursionError) as e:
            raise _ServerDied() from e

    def close(self) -> None:
        self.dead = True
        for fd in (self.req_w, self.resp_r):
            try:
                os.close(fd)
            except OSError:
                pass
        self.proc.kill()
        self.proc.close()


class _Checker:
    """Runs a problem's tests in this interpreter against a sandboxed candidate."""

    def __init__(
        self,
        problem: Mapping[str, Any],
        completion: str,
        limits: SandboxLimits,
        per_test_s: float,
        min_isolation: Sequence[str],
    ):
        self.program = build_program(problem, completion)
        self.limits, self.per_test_s, self.min_isolation = limits, per_test_s, min_isolation
        self.problem = problem
        self.server: _Server | None = None
        self.hello: dict[str, Any] = {}
        self.deadline = 0.0

    def _start(self) -> bool:
        self.server = _Server(self.program, self.limits, self.min_isolation)
        if self.server.dead:
            self.server = None
            return False
        try:
            hello = self.server.recv(self.deadline)
        except (_TestTimeout, _ServerDied):
            self._stop()
            return False
        if type(hello) is not dict or hello.get("loaded") is not None:
            self._stop()
            return False
        names = hello.get("names")
        self.hello = names if type(names) is dict else {}
        return True

    def _stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    def call(self, name: str, args: tuple, kwargs: dict) -> Any:
        if self.server is None:
            raise _ServerDied()
        try:
            wire_args = [encode_value(a) for a in args]
            wire_kwargs = [[str(k), encode_value(v)] for k, v in kwargs.items()]
        except RecursionError as e:
            raise TypeError("argument nested too deeply") from e
        self.server.send({"name": name, "args": wire_args, "kwargs": wire_kwargs}, self.deadline)
        reply = self.server.recv(self.deadline)
        if type(reply) is not dict:
            raise _ServerDied()
        if "exc" in reply:
            _raise_like(reply.get("exc"), reply.get("msg"))
        try:
            value = decode_value(reply.get("ok"))
            back = reply.get("args")
            if type(back) is list and len(back) == len(args):  # in-place changes to arguments
                for a, b in zip(args, back, strict=True):
                    if b is not None and type(a) in (list, dict, set):
                        new = decode_value(b)
                        if type(new) is type(a):
                            a.clear()
                            a.update(new) if type(a) is not list else a.extend(new)
        except RecursionError as e:
            raise CandidateError("value nested too deeply") from e
        return value

    def _namespace(self, tests: Sequence[str]) -> dict[str, Any] | None:
        ns: dict[str, Any] = {"__name__": "__passk_tests__"}
        problem = self.problem
        if problem.get("continuation"):
            try:  # the prompt's helpers (dataset code), e.g. HumanEval/32's poly
                exec(compile(problem["prompt"], "prompt.py", "exec"), ns)
            except Exception:  # noqa: BLE001 -- a prompt need not be runnable on its own
                pass
        entry = problem.get("entry_point")
        if entry:  # setup statements of check() may call the candidate too
            ns["candidate"] = ns[entry] = self._proxy(entry)
        try:
            exec(compile(problem.get("setup", "") or "", "setup.py", "exec"), ns)
        except Exception:  # noqa: BLE001 -- broken setup: every test fails
            return None
        used: set[str] = set()
        for src in tests:
            try:
                used |= {n.id for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Name)}
            except SyntaxError:
                continue
        for name in sorted(used):
            if name in ns and name != entry:
                continue
            if hasattr(builtins, name):  # never taken from the candidate
                continue
            if name in _SAFE_MODULES:
                ns[name] = __import__(name)
                continue
            kind = self.hello.get(name)
            if type(kind) is not list or not kind:
                continue
            if kind[0] == "callable":
                ns[name] = self._proxy(name)
            elif kind[0] == "module" and len(kind) > 1 and kind[1] in _SAFE_MODULES:
                ns[name] = __import__(kind[1])
            elif kind[0] == "value" and len(kind) > 1:
                try:
                    ns[name] = decode_value(kind[1])
                except (CandidateError, RecursionError):
                    pass
        if entry:
            ns["candidate"] = ns[entry] = self._proxy(entry)
        return ns

    def _proxy(self, name: str):
        checker = self

        def proxy(*args, **kwargs):
            return checker.call(name, args, kwargs)

        proxy.__name__ = name
        return proxy

    def run(self) -> int:
        tests = list(self.problem["tests"])
        end = time.monotonic() + self.limits.timeout_s
        passed = 0
        ns = None
        try:
            for i, src in enumerate(tests):
                now = time.monotonic()
                if now >= end:
                    break
                self.deadline = min(end, now + self.per_test_s)
                if self.server is None:
                    if not self._start():
                        break  # the solution does not load (or hangs loading): the rest fail
                    ns = None
                if ns is None:
                    ns = self._namespace(tests)
                    if ns is None:
                        return 0
                try:
                    exec(compile(src, f"test_{i}.py", "exec"), dict(ns))
                    passed += 1
                except (_TestTimeout, _ServerDied):
                    self._stop()
                except Exception:  # noqa: BLE001 -- a failing test
                    pass
        finally:
            self._stop()
        return passed


def run_tests(
    problem: Mapping[str, Any],
    completion: str,
    limits: SandboxLimits = DEFAULT_LIMITS,
    per_test_s: float = 5,
    min_isolation: Sequence[str] = FULL_ISOLATION,
) -> float:
    """Fraction of ``problem``'s tests that ``completion`` passes (harness in the module docstring).

    Raises:
      IsolationError: the sandbox cannot obtain ``min_isolation`` (nothing was run).
    """
    tests = list(problem["tests"])
    if not tests or not isinstance(completion, str) or not completion.strip():
        return 0.0
    checker = _Checker(problem, completion, limits, float(per_test_s), min_isolation)
    return checker.run() / len(tests)


class CodeTask(TaskBase):
    """Coding problems from JSONL, rewarded by the fraction of unit tests passed in the sandbox."""

    binary = False
    alphabet = None

    def __init__(
        self,
        train_path: str | os.PathLike | None = None,
        eval_path: str | os.PathLike | None = None,
        name: str = "code",
        limits: SandboxLimits = DEFAULT_LIMITS,
        per_test_s: float = 5,
        max_workers: int | None = None,
        problems: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
        min_isolation: Sequence[str] = FULL_ISOLATION,
        deadline_s: float | None = None,
    ):
        """Build the task.

        Args:
          train_path, eval_path: JSONL files (e.g. MBPP for train, HumanEval for eval, as PKPO).
          name: task name used in uids.
          limits: sandbox limits of one scoring run (``timeout_s`` bounds all of a problem's tests).
          per_test_s: seconds per unit test.
          max_workers: parallel scorer processes in ``score_batch`` (default: the usable CPUs, at most 16).
          problems: rows given directly, ``{"train": [...], "eval": [...]}`` (instead of files).
          min_isolation: sandbox mechanisms required (default full isolation: ``mount``, ``pid``,
            ``net``, ``ipc``; a config may give ``"full"``, ``"none"`` or ``"mount+pid+net"``).
            Checked here, once: with less, :class:`IsolationError` says what is missing and how
            to get it. ``()`` / ``"none"`` is the explicit opt-in to weaker isolation.
          deadline_s: enforced deadline of one score (default ``limits.timeout_s + 10``).
        """
        self.name = name
        self.limits, self.per_test_s = limits, float(per_test_s)
        self.min_isolation = parse_isolation(min_isolation)
        self.score_workers = max_workers
        self.score_deadline_s = limits.timeout_s + 10.0 if deadline_s is None else deadline_s
        got = isolation_available()
        missing = sorted(set(self.min_isolation) - set(got))
        if missing:
            raise IsolationError(_refusal(missing, got))
        self.isolation = got
        if not set(FULL_ISOLATION) <= set(got):
            warnings.warn(
                f"CodeTask: sandbox isolation is {'+'.join(got) or 'none'} (opted in with "
                f"min_isolation={self.min_isolation!r}); not protected: "
                + "; ".join(unprotected(got)),
                RuntimeWarning,
                stacklevel=2,
            )
        rows: dict[str, list[Mapping[str, Any]]] = {"train": [], "eval": []}
        for split, path in (("train", train_path), ("eval", eval_path)):
            if path is not None:
                with open(path, encoding="utf-8") as f:
                    rows[split] = [json.loads(line) for line in f if line.strip()]
        for split, given in (problems or {}).items():
            rows[split] = list(given)
        self._prompts = {split: self._make(split, r) for split, r in rows.items()}

    def _make(self, split: str, rows: Sequence[Mapping[str, Any]]) -> list[Prompt]:
        out = []
        for i, row in enumerate(rows):
            problem = problem_from_row(row)
            solution = problem["solution"]
            if solution is not None and problem.get("continuation"):
                solution = solution[len(problem["prompt"]) :]
            out.append(
                Prompt(
                    text=problem["prompt"],
                    target=solution,
                    meta={"problem": problem},
                    uid=f"{self.name}/{split}/{i:06d}",
                )
            )
        return out

    def _split(self, split: str) -> Sequence[Prompt]:
        return self._prompts[split]

    def _score(self, prompt: Prompt, completion: str) -> float:
        """Fraction of the prompt's unit tests that ``completion`` passes (unbounded; in a worker)."""
        return run_tests(
            prompt.meta["problem"], completion, self.limits, self.per_test_s, self.min_isolation
        )
