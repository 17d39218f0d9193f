"""Text mazes with many valid paths and Chen et al.'s L/R/U/D verifier.

Grid legend: ``S`` start, ``E`` end, ``*`` wall, ``.`` floor; rows joined by ``"\\n"``. There is no outer
wall row: stepping off the grid fails exactly like stepping into ``*``.

Generation (our own, seeded by ``numpy.random.Generator``): a maze of ``rows x cols`` characters (both
odd, >= 3) has *rooms* at even coordinates. A randomized depth-first search over the rooms carves a
perfect maze (a spanning tree: exactly one path between any two rooms); then a ``loop_fraction`` of the
remaining passage walls (cells between two rooms) is knocked out, so most mazes have **many valid
paths**. ``S`` and ``E`` are placed on distinct floor cells at BFS distance ``>= min_path_length``.
Held-out splits are never seen in training: ``eval`` and ``hard`` are generated first and ``train``
skips every grid string they contain (and every split is duplicate-free).

Verifier (Chen et al., ``code/maze_verifier.py``; ``spec/passk_training.md`` section 3.2): take the text
between the last ``<answer>``/``</answer>`` pair, else the brace-balanced content of the last
``\\boxed{...}``, else the raw completion; upper-case it; apply each ``L``/``R``/``U``/``D`` as one step
and skip every other character; reward 0 as soon as a step leaves the grid or enters ``*``; reward 1 if
the final cell is ``E``. A walk may pass through ``E`` and come back: only the final cell counts.

Prompt styles (``prompt_style``):

* ``"compact"`` (default, for a tiny transformer with a character tokenizer): the grid, then
  ``"\\n>"``; the completion is the bare move string (``target``: one BFS shortest path, e.g.
  ``"DDRR"``). ``alphabet`` is ``"\\n*.>DELRSU"`` (sorted).
* ``"instruct"``: a one-paragraph instruction asking for moves inside ``<answer></answer>``, then the
  grid; ``target`` is ``"<answer>DDRR</answer>"``.

Example::

    task = MazeTask(sizes=(5,), hard_sizes=(7,), seed=0, num_train=1000, num_eval=100, num_hard=100)
    p = task.prompts("train", 1)[0]
    task.score(p, p.target)   # 1.0
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from passk_jax.tasks.base import Prompt, TaskBase, extract_answer

__all__ = [
    "MOVES",
    "MazeTask",
    "bfs_distances",
    "generate_maze",
    "maze_stats",
    "score_maze",
    "score_maze_graded",
    "shortest_path",
]

WALL, FLOOR, START, END = "*", ".", "S", "E"
MOVES: dict[str, tuple[int, int]] = {"L": (0, -1), "R": (0, 1), "U": (-1, 0), "D": (1, 0)}
COMPACT_SUFFIX = "\n>"
INSTRUCTION = (
    "Find a path from S to E in the maze below. '*' is a wall and '.' is floor; you may not leave the "
    "grid. Answer with a string of moves L (left), R (right), U (up), D (down) inside "
    "<answer></answer>.\n"
)
_SPLIT_OFFSET = {"eval": 1, "hard": 2, "train": 3}


# --------------------------------------------------------------------------------------------------
# Verifier.
# --------------------------------------------------------------------------------------------------


def score_maze(grid: str, completion: str) -> float:
    """Chen et al.'s maze reward of ``completion`` on ``grid``: 1.0 if the walk ends on ``E``, else 0.0.

    Never raises: a grid without ``S`` or a non-string completion scores 0.0.

    Args:
      grid: the maze, rows joined by ``"\\n"`` (ragged rows allowed; a cell beyond a row's end is off
        the grid).
      completion: raw model output; extraction as in the module docstring.

    Returns:
      0.0 or 1.0.
    """
    walk = _walk(grid, completion)
    if walk is None:
        return 0.0
    rows, _, (r, c) = walk
    return 1.0 if rows[r][c] == END else 0.0


def _walk(grid: Any, completion: Any) -> tuple[list[str], tuple[int, int], tuple[int, int]] | None:
    """``(rows, start, final cell)`` of the completion's legal walk from ``S``; ``None`` for a
    non-string input, a grid without ``S``, or a step off the grid or into a wall."""
    if not isinstance(grid, str) or not isinstance(completion, str):
        return None
    rows = grid.split("\n")
    start = _find(rows, START)
    if start is None:
        return None
    try:
        path = extract_answer(completion).upper()
    except Exception:  # noqa: BLE001 -- defensive: extraction is total, but never raise
        return None
    r, c = start
    for ch in path:
        step = MOVES.get(ch)
        if step is None:
            continue
        r += step[0]
        c += step[1]
        if r < 0 or r >= len(rows) or c < 0 or c >= len(rows[r]) or rows[r][c] == WALL:
            return None
    return rows, start, (r, c)


def score_maze_graded(grid: str, completion: str) -> float:
    """A continuous maze reward in ``[0, 1]``: 1.0 for a solve, else partial credit for progress.

    The walk is read and checked exactly as in :func:`score_maze`: a step off the grid or into a wall
    scores 0.0, so partial credit never rewards breaking the rules. A legal walk that ends on ``E``
    scores 1.0 (so ``reward >= 1`` is exactly a :func:`score_maze` pass); one that ends elsewhere
    scores ``0.5 * max(0, 1 - d_end / d_start)``, with ``d`` the BFS distance to ``E``: at most
    0.5, and 0.0 for an empty answer or a walk that ends no closer to ``E`` than ``S`` is.

    Never raises; a grid without ``S`` or ``E`` scores 0.0.
    """
    walk = _walk(grid, completion)
    if walk is None:
        return 0.0
    rows, start, (r, c) = walk
    end = _find(rows, END)
    if end is None:
        return 0.0
    if (r, c) == end:
        return 1.0
    dist = _distances_to_end(grid)
    d0, d1 = dist.get(start), dist.get((r, c))
    if not d0 or d1 is None:
        return 0.0
    return 0.5 * max(0.0, 1.0 - d1 / d0)


@functools.lru_cache(maxsize=4096)
def _distances_to_end(grid: str) -> dict[tuple[int, int], int]:
    rows = grid.split("\n")
    return bfs_distances(rows, _find(rows, END))


def _find(rows: Sequence[str], ch: str) -> tuple[int, int] | None:
    for r, row in enumerate(rows):
        c = row.find(ch)
        if c >= 0:
            return r, c
    return None


# --------------------------------------------------------------------------------------------------
# Graph helpers.
# --------------------------------------------------------------------------------------------------


def _cells(grid: str | Sequence[str]) -> list[str]:
    return grid.split("\n") if isinstance(grid, str) else list(grid)


def bfs_distances(grid: str | Sequence[str], source: tuple[int, int]) -> dict[tuple[int, int], int]:
    """BFS step counts from ``source`` to every reachable non-wall cell of ``grid``."""
    rows = _cells(grid)
    dist = {source: 0}
    queue = collections.deque([source])
    while queue:
        r, c = queue.popleft()
        for dr, dc in MOVES.values():
            nr, nc = r + dr, c + dc
            if (
                0 <= nr < len(rows)
                and 0 <= nc < len(rows[nr])
                and rows[nr][nc] != WALL
                and (nr, nc) not in dist
            ):
                dist[(nr, nc)] = dist[(r, c)] + 1
                queue.append((nr, nc))
    return dist


def shortest_path(grid: str | Sequence[str]) -> str | None:
    """One shortest ``S`` -> ``E`` move string (ties broken in ``L, R, U, D`` order), ``None`` if none."""
    rows = _cells(grid)
    start, end = _find(rows, START), _find(rows, END)
    if start is None or end is None:
        return None
    dist = bfs_distances(rows, end)
    if start not in dist:
        return None
    moves = []
    r, c = start
    while (r, c) != end:
        for name, (dr, dc) in MOVES.items():
            nxt = (r + dr, c + dc)
            if dist.get(nxt, -1) == dist[(r, c)] - 1:
                moves.append(name)
                r, c = nxt
                break
    return "".join(moves)


def maze_stats(grid: str | Prompt) -> dict[str, Any]:
    """Summary numbers of one maze (or a maze :class:`Prompt`).

    Returns:
      dict with ``rows``, ``cols``, ``num_floor`` (non-wall cells, ``S`` and ``E`` included),
      ``shortest_path_length`` (-1 if unsolvable), ``num_shortest_paths`` (count of distinct shortest
      move strings) and ``num_cycles`` (independent cycles of the floor graph: edges - cells +
      components; 0 for a perfect maze).
    """
    if isinstance(grid, Prompt):
        grid = grid.meta["grid"]
    rows = _cells(grid)
    floor = [(r, c) for r, row in enumerate(rows) for c, ch in enumerate(row) if ch != WALL]
    floor_set = set(floor)
    edges = sum(((r, c + 1) in floor_set) + ((r + 1, c) in floor_set) for r, c in floor)
    components, seen = 0, set()
    for cell in floor:
        if cell not in seen:
            components += 1
            seen.update(bfs_distances(rows, cell))
    start, end = _find(rows, START), _find(rows, END)
    length, count = -1, 0
    if start is not None and end is not None:
        dist = bfs_distances(rows, start)
        if end in dist:
            length = dist[end]
            # Count shortest paths by dynamic programming over BFS layers.
            ways = {start: 1}
            for cell in sorted(dist, key=dist.get):
                for dr, dc in MOVES.values():
                    nxt = (cell[0] + dr, cell[1] + dc)
                    if dist.get(nxt, -1) == dist[cell] + 1:
                        ways[nxt] = ways.get(nxt, 0) + ways[cell]
            count = ways[end]
    return {
        "rows": len(rows),
        "cols": max((len(row) for row in rows), default=0),
        "num_floor": len(floor),
        "shortest_path_length": length,
        "num_shortest_paths": count,
        "num_cycles": edges - len(floor) + components,
    }


# --------------------------------------------------------------------------------------------------
# Generator.
# --------------------------------------------------------------------------------------------------


def _check_size(size: int | Sequence[int]) -> tuple[int, int]:
    rows, cols = (size, size) if isinstance(size, int | np.integer) else tuple(size)
    for v in (rows, cols):
        if int(v) != v or v < 3 or v % 2 == 0:
            raise ValueError(f"maze sizes must be odd integers >= 3, got {size!r}")
    return int(rows), int(cols)


def generate_maze(
    rng: np.random.Generator,
    rows: int,
    cols: int,
    loop_fraction: float = 0.5,
    min_path_length: int | None = None,
) -> str:
    """Generate one solvable maze as text (``S``, ``E``, ``*``, ``.``; rows joined by ``"\\n"``).

    Args:
      rng: source of randomness (the only one used).
      rows, cols: grid size in characters, both odd and >= 3.
      loop_fraction: fraction in ``[0, 1]`` of the passage walls left by the perfect maze that are
        knocked out (0 = perfect maze, one path between any two cells; 1 = every passage open).
      min_path_length: minimum BFS distance between ``S`` and ``E``; default ``(rows + cols) // 2``,
        capped at the largest distance the maze offers.

    Returns:
      The maze text. ``S`` and ``E`` are always connected.
    """
    rows, cols = _check_size((rows, cols))
    if not 0.0 <= loop_fraction <= 1.0:
        raise ValueError(f"loop_fraction must be in [0, 1], got {loop_fraction}")
    grid = [[WALL] * cols for _ in range(rows)]
    room_rows, room_cols = (rows + 1) // 2, (cols + 1) // 2
    visited = np.zeros((room_rows, room_cols), dtype=bool)
    start_room = (int(rng.integers(room_rows)), int(rng.integers(room_cols)))
    visited[start_room] = True
    grid[2 * start_room[0]][2 * start_room[1]] = FLOOR
    stack = [start_room]
    while stack:  # randomized DFS (recursive backtracker), iterative
        i, j = stack[-1]
        options = [
            (i + di, j + dj)
            for di, dj in ((0, 1), (0, -1), (1, 0), (-1, 0))
            if 0 <= i + di < room_rows and 0 <= j + dj < room_cols and not visited[i + di, j + dj]
        ]
        if not options:
            stack.pop()
            continue
        ni, nj = options[int(rng.integers(len(options)))]
        visited[ni, nj] = True
        grid[i + ni][j + nj] = FLOOR  # the passage cell between the two rooms
        grid[2 * ni][2 * nj] = FLOOR
        stack.append((ni, nj))
    # Passage walls: cells with exactly one odd coordinate that are still walls.
    walls = [
        (r, c)
        for r in range(rows)
        for c in range(cols)
        if (r % 2) != (c % 2) and grid[r][c] == WALL
    ]
    num_knock = int(round(loop_fraction * len(walls)))
    if num_knock:
        for idx in rng.choice(len(walls), size=num_knock, replace=False):
            r, c = walls[int(idx)]
            grid[r][c] = FLOOR
    floor = [(r, c) for r in range(rows) for c in range(cols) if grid[r][c] == FLOOR]
    want = (rows + cols) // 2 if min_path_length is None else int(min_path_length)
    # Pick S uniformly; E uniformly among cells far enough away; lower the bar if the maze is too small.
    grid_rows = ["".join(row) for row in grid]
    for _ in range(64):
        start = floor[int(rng.integers(len(floor)))]
        dist = bfs_distances(grid_rows, start)
        far = [cell for cell, d in dist.items() if d >= max(1, want)]
        if far:
            break
    else:  # too small for `want`: take the farthest cells from the last start
        top = max(dist.values())
        far = [cell for cell, d in dist.items() if d == top]
    end = far[int(rng.integers(len(far)))]
    grid[start[0]][start[1]] = START
    grid[end[0]][end[1]] = END
    return "\n".join("".join(row) for row in grid)


# --------------------------------------------------------------------------------------------------
# Task.
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class MazeTask(TaskBase):
    """Solvable text mazes scored by Chen et al.'s verifier (module docstring has the details).

    Attributes:
      sizes: difficulty levels of ``train`` / ``eval``: a sequence of odd ints (square) or
        ``(rows, cols)`` pairs, e.g. ``(5, 7)`` = two square sizes, ``((5, 7),)`` = one 5 x 7 size;
        prompt ``i`` of a split uses ``sizes[i % len(sizes)]``.
      hard_sizes: sizes of the held-out ``hard`` split (larger mazes).
      seed: generation seed; same seed -> same prompts.
      num_train, num_eval, num_hard: split sizes.
      loop_fraction: fraction of leftover passage walls knocked out (many valid paths when > 0).
      min_path_length: minimum S-E distance; ``None`` -> ``(rows + cols) // 2`` per size.
      prompt_style: ``"compact"`` or ``"instruct"``.
      graded: score with :func:`score_maze_graded` (continuous rewards, ``binary`` False) instead
        of the 0/1 :func:`score_maze`; a pass (reward >= 1) is the same solve under both.
    """

    sizes: Sequence[int | tuple[int, int]] = (5,)
    hard_sizes: Sequence[int | tuple[int, int]] = (7,)
    seed: int = 0
    num_train: int = 2000
    num_eval: int = 200
    num_hard: int = 200
    loop_fraction: float = 0.5
    min_path_length: int | None = None
    prompt_style: str = "compact"
    graded: bool = False
    name: str = "maze"

    binary = True  # per instance: False when graded
    splits = ("train", "eval", "hard")

    def __post_init__(self) -> None:
        self.sizes = tuple(_check_size(s) for s in _as_size_list(self.sizes))
        self.hard_sizes = tuple(_check_size(s) for s in _as_size_list(self.hard_sizes))
        if not self.sizes:
            raise ValueError("sizes must not be empty")
        if self.prompt_style not in ("compact", "instruct"):
            raise ValueError(
                f"prompt_style must be 'compact' or 'instruct', got {self.prompt_style!r}"
            )
        if not 0.0 <= self.loop_fraction <= 1.0:
            raise ValueError(f"loop_fraction must be in [0, 1], got {self.loop_fraction}")
        for attr in ("num_train", "num_eval", "num_hard"):
            if int(getattr(self, attr)) < 0:
                raise ValueError(f"{attr} must be >= 0")
        self.binary = not self.graded
        self._cache: dict[str, list[Prompt]] = {}

    @property
    def alphabet(self) -> str:  # type: ignore[override]
        """Every character prompts and targets can contain."""
        chars = set(WALL + FLOOR + START + END + "\n" + "".join(MOVES))
        chars |= set(COMPACT_SUFFIX) if self.prompt_style == "compact" else set(INSTRUCTION)
        if self.prompt_style == "instruct":
            chars |= set("<answer></answer>")
        return "".join(sorted(chars))

    def format_prompt(self, grid: str) -> str:
        """The conditioning text for ``grid`` in this task's prompt style."""
        if self.prompt_style == "compact":
            return grid + COMPACT_SUFFIX
        return INSTRUCTION + grid + "\n"

    def format_target(self, moves: str) -> str:
        """The reference completion for a move string in this task's prompt style."""
        return moves if self.prompt_style == "compact" else f"<answer>{moves}</answer>"

    def _split(self, split: str) -> list[Prompt]:
        if split not in self._cache:
            # Held-out splits first; train skips their grids (held-out mazes never seen in training).
            if split == "train":
                taken = {p.meta["grid"] for s in ("eval", "hard") for p in self._split(s)}
            elif split == "hard":
                taken = {p.meta["grid"] for p in self._split("eval")}
            else:
                taken = set()
            sizes = self.hard_sizes if split == "hard" else self.sizes
            num = {"train": self.num_train, "eval": self.num_eval, "hard": self.num_hard}[split]
            if num and not sizes:
                raise ValueError(f"split {split!r} needs sizes")
            self._cache[split] = self._generate(split, sizes, int(num), taken)
        return self._cache[split]

    def _generate(
        self, split: str, sizes: Sequence[tuple[int, int]], num: int, taken: set[str]
    ) -> list[Prompt]:
        rng = np.random.default_rng([int(self.seed), _SPLIT_OFFSET[split]])
        out: list[Prompt] = []
        seen = set(taken)
        misses = 0  # consecutive duplicates; many in a row means the size has run out of mazes
        while len(out) < num:
            rows, cols = sizes[len(out) % len(sizes)]
            grid = generate_maze(rng, rows, cols, self.loop_fraction, self.min_path_length)
            if grid in seen:
                misses += 1
                if misses > 2000:
                    raise ValueError(
                        f"maze: could not generate {num} distinct {split} mazes of sizes {sizes}; "
                        "use larger sizes, a higher loop_fraction or fewer prompts"
                    )
                continue
            seen.add(grid)
            misses = 0
            moves = shortest_path(grid)
            assert moves is not None  # generate_maze always connects S and E
            out.append(
                Prompt(
                    text=self.format_prompt(grid),
                    target=self.format_target(moves),
                    meta={"grid": grid, "rows": rows, "cols": cols, "shortest": len(moves)},
                    uid=f"maze/{split}/{rows}x{cols}/{len(out):06d}",
                )
            )
        return out

    def score(self, prompt: Prompt, completion: str) -> float:
        """Chen et al.'s maze reward (0.0 or 1.0), or the graded one; never raises."""
        try:
            grid = prompt.meta["grid"]
        except Exception:  # noqa: BLE001
            return 0.0
        return (score_maze_graded if self.graded else score_maze)(grid, completion)


def _as_size_list(sizes: Any) -> Iterable[Any]:
    """A bare int is one square size; any other iterable is a list of sizes (ints or pairs)."""
    return (sizes,) if isinstance(sizes, int | np.integer) else tuple(sizes)
