"""Many clients at once: each sees its own writes in order (the notes' "GET overtook SET" bug)."""

from __future__ import annotations

import asyncio

import redis.asyncio


async def virtual_user(port: int, number: int, rounds: int) -> list[str]:
    client = redis.asyncio.Redis(host="127.0.0.1", port=port, socket_timeout=10)
    problems = []
    try:
        for i in range(rounds):
            key = f"vu{number}:{i % 5}"
            value = f"{number}-{i}"
            await client.set(key, value)
            got = await client.get(key)
            if got != value.encode():
                problems.append(f"{key}: wrote {value}, read {got!r}")
            if i % 10 == 0:
                await client.expire(key, 100)
                if await client.ttl(key) <= 0:
                    problems.append(f"{key}: TTL lost right after EXPIRE")
        # Pipelined: replies come back in request order.
        pipe = client.pipeline(transaction=False)
        for i in range(50):
            pipe.set(f"vu{number}:p", i)
            pipe.get(f"vu{number}:p")
        replies = await pipe.execute()
        if replies[1::2] != [str(i).encode() for i in range(50)]:
            problems.append(f"pipeline replies out of order: {replies[1::2][:5]}...")
    finally:
        await client.aclose()
    return problems


def test_hundred_clients_read_their_own_writes(toy, r):
    async def main():
        return await asyncio.wait_for(
            asyncio.gather(*(virtual_user(toy.port, n, 100) for n in range(100))), timeout=120
        )

    results = asyncio.run(main())
    assert [p for problems in results for p in problems] == []
    assert r.info("stats")["total_connections_received"] >= 100
