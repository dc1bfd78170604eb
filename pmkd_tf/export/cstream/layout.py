"""The offline layout of the C engine: which rows it computes, in which order, and where each row lives.

Everything about an inference is static: the graph, the image size, and
therefore the whole sequence of row computations. So it is laid out here,
once, and the engine only follows tables:

1. Live rows. Walking back from the logits, a row is live if some live
   output row reads it. In a 1xN network a vertically strided conv of kernel
   height 1 reads only every other row, so whole rows of the layers before it
   feed nothing; the engine skips them (the logits do not change). A 2x1
   pool before the stride (`--downsampling=average|max`) reads both rows of
   every pair, so there every row is live.
2. Schedule. The engine's rule, simulated here step by step: after a row is
   pushed, repeatedly run the last node (in graph order) that can produce its
   next live row, until none can. A row thus flows as deep as it can before
   the next one starts (depth first, as in `pmkd_tf.export.streaming`), and
   the bottom padding rows of a window follow once the last input row is in.
3. Memory. Each node's output rows live in a ring of `ring` rows (row `r` in
   slot `r % ring`), sized to the largest span of its rows alive at once:
   1 for a row consumed at once, N for the input of an N-row window, more
   for a shortcut waiting for a delayed residual branch. An ADD or MUL whose
   input row dies as the output row is born writes in place. Rings and the
   MEAN sums are then packed into one arena by first fit, slot by slot: two
   slots may share bytes only if they are never alive at the same step. (A
   2x1 pool reads an odd input row as soon as it is written, while the even
   row before it waits for it: other rows use the odd slot in between.)

`verify_layout` re-runs the schedule against the finished layout and proves that no
two live rows ever share a byte.
"""

from __future__ import annotations

import bisect
import dataclasses

import numpy as np

from pmkd_tf.export.cstream.graph import ADD, INPUT, MEAN, MUL, Graph, EngineNode

WORD = 4  # the MEAN sums are int32


def rows_read(node: EngineNode, out_row: int) -> range:
    """The input rows output row `out_row` of a window node reads (rows outside the input are padding)."""
    start = out_row * node.stride - node.pad_top
    return range(max(start, 0), min(start + node.window, node.in_shape[0]))


def live_rows(graph: Graph, skip_dead_rows: bool) -> list[np.ndarray]:
    """Per node, a boolean per output row: does the engine compute it? (All rows if not `skip_dead_rows`.)"""
    nodes = graph.nodes
    needed = [np.zeros(node.out_shape[0], bool) for node in nodes]
    needed[-1][:] = True
    for index in reversed(range(len(nodes))):
        if not skip_dead_rows:
            needed[index][:] = True
        node = nodes[index]
        for out_row in np.flatnonzero(needed[index]):
            rows = rows_read(node, int(out_row))
            for producer in node.inputs:
                needed[producer][rows.start:rows.stop] = True
    return needed


@dataclasses.dataclass(frozen=True)
class Event:
    """One step of the schedule: `node` produces `row` (for a MEAN: adds input row `row`) and reads `reads`."""

    node: int
    row: int
    reads: tuple[tuple[int, int], ...]


class _Engine:
    """The C engine's scheduling rule (pmkd_stream.c: ready, fire, run), step for step."""

    def __init__(self, graph: Graph, live: list[np.ndarray]) -> None:
        self.nodes, self.live = graph.nodes, live
        self.next = [0 if node.kind in (INPUT, MEAN) else self._next_live(i, 0) for i, node in enumerate(self.nodes)]
        self.events: list[Event] = []

    def _next_live(self, index: int, row: int) -> int:
        rows = np.flatnonzero(self.live[index][row:])
        return row + int(rows[0]) if len(rows) else self.nodes[index].out_shape[0]

    def produced(self, index: int) -> int:
        """How many leading output rows of a node are done (or dead); a MEAN's one row exists after its last sum."""
        node = self.nodes[index]
        if node.kind == MEAN:
            return int(self.next[index] == node.in_shape[0])
        return self.next[index]

    def ready(self, index: int) -> bool:
        node, row = self.nodes[index], self.next[index]
        if node.kind == MEAN:
            return row < node.in_shape[0] and self.produced(node.inputs[0]) > row
        if row >= node.out_shape[0]:
            return False
        last = min(row * node.stride - node.pad_top + node.window - 1, node.in_shape[0] - 1)
        return all(self.produced(producer) > last for producer in node.inputs)

    def fire(self, index: int) -> None:
        node, row = self.nodes[index], self.next[index]
        if node.kind == MEAN:
            self.events.append(Event(index, row, ((node.inputs[0], row),)))
            self.next[index] = row + 1
            return
        reads = tuple((producer, r) for producer in node.inputs for r in rows_read(node, row))
        self.events.append(Event(index, row, reads))
        self.next[index] = self._next_live(index, row + 1)

    def push(self, row: int) -> None:
        self.events.append(Event(0, row, ()))
        self.next[0] = row + 1
        while True:
            index = next((i for i in range(len(self.nodes) - 1, 0, -1) if self.ready(i)), 0)
            if not index:
                return
            self.fire(index)


def schedule(graph: Graph, live: list[np.ndarray]) -> list[Event]:
    """Every step of one inference, in the engine's order; the last node must have produced its row."""
    engine = _Engine(graph, live)
    for row in range(graph.input_shape[0]):
        engine.push(row)
    if not engine.produced(len(graph.nodes) - 1):
        raise RuntimeError("the schedule ended before the logits were computed")  # a layout bug, not user input
    return engine.events


@dataclasses.dataclass(frozen=True)
class Layout:
    """The engine's tables for one model: which rows each node computes, and where they live.

    live: per node, the output rows it computes. ring: per node, the rows
    of its output ring (0 = the image, read from the caller's row in place).
    offset: per node, the arena byte offset of its ring; ring_owner: per
    node, the first of the nodes that write in place into its ring (itself
    if none); accumulator: per MEAN node, the offset of its int32 sums.
    `steps` counts the schedule's events.
    """

    graph: Graph
    live: tuple[np.ndarray, ...]
    ring: tuple[int, ...]
    offset: tuple[int, ...]
    ring_owner: tuple[int, ...]
    accumulator: dict[int, int]
    arena_bytes: int
    steps: int

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one full-frame inference."""
        return sum(node.macs_per_row * node.out_shape[0] for node in self.graph.nodes)

    @property
    def macs_executed(self) -> int:
        """The multiply-accumulates the engine runs (dead rows skipped)."""
        return sum(node.macs_per_row * int(live.sum()) for node, live in zip(self.graph.nodes, self.live))

    @property
    def input_rows_read(self) -> int:
        return int(self.live[0].sum())


@dataclasses.dataclass
class _Region:
    """A ring shared by one or more nodes (writing in place), or a MEAN's sums, with its lifetime in steps."""

    members: list[int]
    bytes_per_row: int
    births: dict[int, int]
    deaths: dict[int, int]
    rows: int = 1
    size: int = 0
    align: int = 1
    offset: int = 0
    alive: np.ndarray | None = None  # (rows, steps + 1): when each slot holds a live row


def _ring_rows(births: dict[int, int], deaths: dict[int, int]) -> int:
    """The smallest ring with `row % ring` collision-free: the largest index span of rows alive together."""
    rows = sorted(births)
    born = [births[row] for row in rows]  # rows are produced in order, so this is sorted too
    span = 1
    for position, row in enumerate(rows):
        last = rows[bisect.bisect_right(born, deaths[row]) - 1]
        span = max(span, last - row + 1)
    return span


def _lifetimes(graph: Graph, live: list[np.ndarray], events: list[Event]) -> tuple[list, list, dict]:
    """Per node: step each stored output row is written and last read; per MEAN: its sums' first/last step.

    A dead image row is pushed but never stored, so it has no lifetime.
    """
    births: list[dict[int, int]] = [{} for _ in graph.nodes]
    deaths: list[dict[int, int]] = [{} for _ in graph.nodes]
    sums: dict[int, tuple[int, int]] = {}
    for step, event in enumerate(events):
        node = graph.nodes[event.node]
        if node.kind == MEAN:
            first = sums.get(event.node, (step, step))[0]
            sums[event.node] = (first, step)
            if event.row == node.in_shape[0] - 1:
                births[event.node][0] = step
        elif event.node or live[0][event.row]:
            births[event.node][event.row] = step
        for producer, row in event.reads:
            deaths[producer][row] = step
    end = len(events)
    deaths[-1][0] = end  # the logits stay until the caller has read them
    for index in range(len(graph.nodes)):
        for row, birth in births[index].items():
            deaths[index].setdefault(row, birth)  # written, never read: it still occupies its slot for one step
    return births, deaths, sums


def _image_in_place(events: list[Event], deaths: dict[int, int]) -> bool:
    """Whether every image row is dead before the next row is pushed (so the caller's buffer suffices)."""
    pushes = [step for step, event in enumerate(events) if event.node == 0] + [len(events) + 1]
    return all(death < pushes[row + 1] for row, death in deaths.items())


def _regions(graph: Graph, live: list[np.ndarray], births, deaths, sums, copy_image: bool) -> tuple[list, dict]:
    """The arena regions: one ring per group of nodes writing in place, plus the MEAN sums; and each node's region."""
    region_of: dict[int, _Region] = {}
    regions: list[_Region] = []
    for index, node in enumerate(graph.nodes):
        if index == 0 and not copy_image:
            continue
        if node.kind in (ADD, MUL):
            host = next((p for p in node.inputs if p in region_of and p != 0
                         and np.array_equal(live[p], live[index])
                         and all(deaths[p][row] == births[index][row] for row in births[index])), None)
            if host is not None:
                region = region_of[host]
                region.members.append(index)
                region.deaths.update(deaths[index])
                region_of[index] = region
                continue
        region = _Region([index], node.row_bytes, dict(births[index]), dict(deaths[index]))
        regions.append(region)
        region_of[index] = region
    for index, (first, last) in sums.items():
        channels = graph.nodes[index].in_shape[2]
        regions.append(_Region([-index], WORD * channels, {0: first}, {0: last}, align=WORD))
    return regions, region_of


def _place(regions: list[_Region], steps: int) -> int:
    """First-fit packing, largest region first, slot against slot; returns the arena size."""
    for region in regions:
        region.rows = _ring_rows(region.births, region.deaths)
        region.size = region.rows * region.bytes_per_row
        region.alive = np.zeros((region.rows, steps + 1), bool)
        for row, birth in region.births.items():
            region.alive[row % region.rows, birth:region.deaths[row] + 1] = True
    placed: list[_Region] = []
    for region in sorted(regions, key=lambda r: (-r.size, int(np.argmax(r.alive.any(axis=0))))):
        # The offsets at which one of its slots would overlap a slot of a placed region alive at the same step.
        size = region.bytes_per_row
        forbidden = sorted((other.offset + j * other.bytes_per_row - (i + 1) * size + 1,
                            other.offset + (j + 1) * other.bytes_per_row - i * size)
                           for other in placed for j in range(other.rows) for i in range(region.rows)
                           if np.any(other.alive[j] & region.alive[i]))
        offset = 0
        for start, stop in forbidden:
            if offset < start:
                break
            offset = max(offset, -(-stop // region.align) * region.align)
        region.offset = offset
        placed.append(region)
    return max((r.offset + r.size for r in regions), default=0)


def lay_out(graph: Graph, skip_dead_rows: bool = True) -> Layout:
    """Live rows, schedule and arena layout for `graph`; verified before it is returned."""
    live = live_rows(graph, skip_dead_rows)
    events = schedule(graph, live)
    births, deaths, sums = _lifetimes(graph, live, events)
    copy_image = not _image_in_place(events, deaths[0])
    regions, region_of = _regions(graph, live, births, deaths, sums, copy_image)
    arena = _place(regions, len(events))
    nodes = range(len(graph.nodes))
    layout = Layout(
        graph=graph, live=tuple(live),
        ring=tuple(region_of[i].rows if i in region_of else 0 for i in nodes),
        offset=tuple(region_of[i].offset if i in region_of else 0 for i in nodes),
        ring_owner=tuple(region_of[i].members[0] if i in region_of else i for i in nodes),
        accumulator={-r.members[0]: r.offset for r in regions if r.members[0] < 0},
        arena_bytes=arena, steps=len(events))
    verify_layout(layout)
    return layout


def verify_layout(layout: Layout) -> None:
    """Replay the schedule on the layout: every row read must still be intact, no two live rows may share a byte.

    Each arena byte records which (ring owner, row) last wrote it; a row
    overwritten before its last read (or by the output of the step reading
    it), or a MEAN sum clobbered between its steps, is a layout bug and
    raises RuntimeError.
    """
    graph = layout.graph
    owner = np.full(max(layout.arena_bytes, 1), -1, np.int64)
    image_row = -1

    def span(index: int, row: int) -> slice:
        start = layout.offset[index] + (row % layout.ring[index]) * graph.nodes[index].row_bytes
        return slice(start, start + graph.nodes[index].row_bytes)

    def tag(index: int, row: int) -> int:
        return layout.ring_owner[index] * 65536 + row

    def write(index: int, row: int) -> None:
        if layout.ring[index]:
            owner[span(index, row)] = tag(index, row)

    def verify(index: int, row: int, what: str) -> None:
        if layout.ring[index] and np.any(owner[span(index, row)] != tag(index, row)):
            raise RuntimeError(f"memory layout: row {row} of node {index} was overwritten before {what}")
        if not layout.ring[index] and row != image_row:
            raise RuntimeError(f"memory layout: image row {row} was read after the caller's buffer moved on")

    for event in schedule(graph, list(layout.live)):
        node = graph.nodes[event.node]
        for producer, row in event.reads:
            verify(producer, row, f"node {event.node} read it")
        if node.kind == MEAN:
            sums = slice(layout.accumulator[event.node], layout.accumulator[event.node] + WORD * node.in_shape[2])
            if event.row and np.any(owner[sums] != -2 - event.node):
                raise RuntimeError(f"memory layout: the sums of node {event.node} were overwritten")
            owner[sums] = -2 - event.node
            if event.row == node.in_shape[0] - 1:
                write(event.node, 0)
        elif event.node:
            write(event.node, event.row)
        else:
            image_row = event.row
            if layout.live[0][event.row]:
                write(0, event.row)
        for producer, row in event.reads:  # a kernel reads its inputs while it writes (in place only elementwise)
            if layout.ring_owner[producer] != layout.ring_owner[event.node]:
                verify(producer, row, f"node {event.node} wrote its output")
    verify(len(graph.nodes) - 1, 0, "the caller read the logits")
