"""The live edge's bookkeeping behind blocking reloads and preload hints (sans-IO parts of it)."""
from __future__ import annotations

import asyncio

from mediaserver.live_edge import LiveEdge, LivePart, RenditionEdge


def edge_with(parts_per_segment: int, complete: int, open_parts: int) -> RenditionEdge:
    edge = RenditionEdge()
    for sequence in range(complete + 1):
        for index in range(parts_per_segment):
            edge.add_part(LivePart(sequence, index, 0.5, index == 0, b"x"))
        edge.add_segment(sequence, b"s")
    for index in range(open_parts):
        edge.add_part(LivePart(complete + 1, index, 0.5, index == 0, b"x"))
    return edge


def test_a_part_index_past_a_closed_segment_means_the_next_segments_first_part() -> None:
    edge = edge_with(4, complete=3, open_parts=0)
    assert edge.has(3, 3) and edge.has(3, None)
    assert not edge.has(3, 4)  # = (4, 0), not there yet (RFC 8216bis 6.2.5.2)
    edge.add_part(LivePart(4, 0, 0.5, True, b"x"))
    assert edge.has(3, 4) and edge.has(4, 0) and not edge.has(4, 1) and not edge.has(4, None)


def test_the_hint_names_the_next_part_or_the_next_segment_when_this_one_is_full() -> None:
    assert edge_with(4, complete=3, open_parts=2).next_part(2.0, 0.5) == (4, 2)
    assert edge_with(4, complete=3, open_parts=0).next_part(2.0, 0.5) == (4, 0)
    assert edge_with(4, complete=3, open_parts=4).next_part(2.0, 0.5) == (5, 0)  # 2 s of parts: segment full


def test_memory_is_bounded() -> None:
    edge = edge_with(4, complete=30, open_parts=1)
    assert len(edge.segments) == edge.keep_segments and len(edge.parts) == edge.keep_segments
    assert edge.part(0, 0) is None and edge.part(31, 0) is not None


def test_waiters_wake_when_the_part_comes_and_time_out_otherwise() -> None:
    async def scenario() -> tuple[bool, bool]:
        live = LiveEdge()
        rendition = live.rendition("360p")
        rendition.add_segment(0, b"s")

        async def produce() -> None:
            await asyncio.sleep(0.05)
            rendition.add_part(LivePart(1, 0, 0.5, True, b"x"))
            await live.notify("360p")

        task = asyncio.create_task(produce())
        came = await live.wait_for("360p", 1, 0, timeout=5)
        await task
        never = await live.wait_for("360p", 1, 3, timeout=0.05)
        return came, never

    assert asyncio.run(scenario()) == (True, False)
