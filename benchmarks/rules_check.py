"""Microseconds per key the rules take to check a body of rich, valid keys (what the emulator pays).

.venv/bin/python -m benchmarks.rules_check --keys 1000 --repeats 20
"""

from __future__ import annotations

import argparse
import timeit

from airflow_provider_unkey import rules


def rich_body(n: int) -> dict[str, object]:
    """A schema-valid body of ``n`` keys carrying every field."""
    key = {
        "name": "key 1",
        "externalId": "user_1",
        "meta": {"plan": "pro"},
        "enabled": True,
        "expires": 1_900_000_000_000,
        "roles": ["reader"],
        "permissions": ["documents.read", "documents.write"],
        "credits": {"remaining": 1000, "refill": {"interval": "daily", "amount": 1000}},
        "ratelimits": [{"name": "requests", "limit": 100, "duration": 60_000, "autoApply": True}],
    }
    return {
        "migrationId": "mig_x",
        "apiId": "api_x",
        "keys": [{"hash": f"{i:044d}", **key} for i in range(n)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    body = rich_body(args.keys)
    assert rules.schema_violations(body) == [] and rules.server_violations(body) == []
    for name, check in (
        ("schema_violations", rules.schema_violations),
        ("server_violations", rules.server_violations),
    ):
        runs = timeit.repeat(lambda check=check: check(body), number=1, repeat=args.repeats)  # type: ignore[misc]
        best, median = min(runs), sorted(runs)[len(runs) // 2]
        print(f"{name}: {1e6 * median / args.keys:.2f} µs a key (best {1e6 * best / args.keys:.2f})")


if __name__ == "__main__":
    main()
