"""The migration report: what a person reads at a glance, written beside the outputs.

``report.md`` holds the counts by reason, the most common failure details with example rows, and the
throughput and concurrency over time; ``throughput.png`` plots them when matplotlib is installed (the
``report`` extra). Nothing here imports Airflow.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from airflow_provider_unkey.migration.record.progress import MigrationSummary
from airflow_provider_unkey.migration.record.reasons import Reason
from airflow_provider_unkey.migration.record.timeline import Timeline

REPORT_FILE = "report.md"
PLOT_FILE = "throughput.png"

#: What to do about each reason, in one line.
ADVICE: dict[str, str] = {
    Reason.INVALID.value: "fix the rows (the detail names the field) and run again: only they are sent",
    Reason.DUPLICATE_IN_SOURCE.value: "nothing, unless the two rows differ: the first row with the hash was sent",
    Reason.ALREADY_EXISTS.value: "nothing, if an earlier run created them (its migrated.parquet has their key ids)",
    Reason.UNCONFIRMED.value: "nothing: this run most likely created them, but Unkey returns no key id then",
    Reason.REJECTED_BY_API.value: "read the detail: Unkey refused these keys themselves",
    Reason.GAVE_UP.value: "run again later: the ledger sends only what is not in Unkey yet",
    Reason.NOT_SENT.value: "fix what stopped the run (the task log says), then run again",
}

#: Numbers, quoted values and hashes vary from row to row; the pattern of a detail does not.
_VARYING = re.compile(
    r"'[^']*'|\"[^\"]*\"|\b[0-9a-fA-F]{16,}\b|[A-Za-z0-9+/]{40,}={0,2}|(?<![A-Za-z0-9_])\d+"
)


def detail_pattern(detail: str) -> str:
    """A failure detail with what varies between rows (numbers, quoted values, hashes) as ``…``."""
    return _VARYING.sub("…", detail)


@dataclass(slots=True)
class FailurePattern:
    """Failures alike but for their row: how many, and a few examples."""

    reason: str
    pattern: str
    count: int = 0
    example_rows: list[int] = field(default_factory=list)
    example_detail: str = ""


def failure_patterns(
    failed_path: str | Path, top: int = 10, examples: int = 3
) -> tuple[list[FailurePattern], int]:
    """The most common failures in ``failed.parquet``, read in record batches (memory stays flat).

    :return: the ``top`` patterns, most rows first, and how many patterns there were in all.
    """
    patterns: dict[tuple[str, str], FailurePattern] = {}
    file = pq.ParquetFile(failed_path)
    for batch in file.iter_batches(columns=["reason", "detail", "source_row"], batch_size=65_536):
        reasons, details, rows = (batch.column(i).to_pylist() for i in range(3))
        for reason, given, row in zip(reasons, details, rows, strict=True):
            detail = given or ""
            key = (reason, detail_pattern(detail))
            entry = patterns.get(key)
            if entry is None:
                entry = patterns[key] = FailurePattern(reason, key[1], example_detail=detail)
            entry.count += 1
            if len(entry.example_rows) < examples:
                entry.example_rows.append(int(row))
    ranked = sorted(patterns.values(), key=lambda p: (-p.count, p.reason, p.pattern))
    return ranked[:top], len(patterns)


def _cell(text: Any) -> str:
    """Text for a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def plot_timeline(timeline: Timeline, path: str | Path, title: str = "") -> bool:
    """Plot keys/s and the requests in flight over time to a PNG; ``False`` when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rates = timeline.rates()
    if not rates:
        return False
    fig, top = plt.subplots(figsize=(9, 4.5), dpi=100)
    try:
        top.plot([t for t, _ in rates], [r for _, r in rates], color="#1a73e8", label="keys/s")
        top.set_xlabel("seconds since the start")
        top.set_ylabel("keys/s", color="#1a73e8")
        top.set_ylim(bottom=0)
        conc = top.twinx()
        seconds = [s.seconds for s in timeline.samples]
        conc.step(
            seconds, [s.in_flight for s in timeline.samples], where="post", color="#e37400", label="in flight"
        )
        conc.step(
            seconds,
            [s.limit for s in timeline.samples],
            where="post",
            color="#b31412",
            linestyle="--",
            label="limit",
        )
        conc.set_ylabel("requests", color="#e37400")
        conc.set_ylim(bottom=0)
        handles = top.get_legend_handles_labels()[0] + conc.get_legend_handles_labels()[0]
        top.legend(handles=handles, loc="upper left", fontsize="small")
        top.set_title(title or "Throughput and concurrency")
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return True


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def write_report(
    directory: str | Path,
    summary: MigrationSummary,
    timeline: Timeline | None,
    *,
    title: str = "Unkey key migration",
    facts: Mapping[str, Any] | None = None,
    outputs: Mapping[str, str] | None = None,
    top: int = 10,
) -> list[Path]:
    """Write ``report.md`` (and ``throughput.png`` when matplotlib is installed) into ``directory``.

    :param directory: where the run wrote ``failed.parquet``.
    :param facts: lines for the head of the report (migration id, API, source, DAG run, ...).
    :param outputs: name -> where each output ends up, for the list of outputs.
    :return: the files written.
    """
    directory = Path(directory)
    written = [directory / REPORT_FILE]
    lines = [f"# {title}", ""]
    for name, value in (facts or {}).items():
        lines.append(f"- **{name}:** {value}")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    lines += [f"- **written:** {when}", ""]
    total = summary.total or 0

    def share(n: int) -> str:
        # Two decimals, but never 0.00% for a few rows nor 100.00% for all but a few.
        if not total:
            return "-"
        percent = 100 * n / total
        if 0 < percent < 0.01:
            return "<0.01%"
        if 99.99 < percent < 100:
            return ">99.99%"
        return f"{percent:.2f}%"

    lines += ["## Outcomes", ""]
    if summary.aborted:
        lines += [f"**The run stopped:** {summary.aborted}", ""]
    elif summary.stopped:
        lines += ["**The task was stopped** before every row was sent; a retry resumes from the ledger.", ""]
    counts = [("rows read", total, "")]
    counts += [("migrated", summary.migrated, share(summary.migrated))]
    if summary.dry_run:
        counts += [("would be sent (validate only)", summary.would_send, share(summary.would_send))]
    counts += [("failed", summary.failed, share(summary.failed))]
    counts += [("skipped: already in Unkey by the ledger", summary.skipped, share(summary.skipped))]
    if summary.resumed:
        counts += [("of which resumed from an earlier try", summary.resumed, share(summary.resumed))]
    lines += _table(["", "rows", "share"], [(what, f"{n:,}", s) for what, n, s in counts])
    lines.append("")
    if summary.failed_by_reason:
        lines += ["### Failed, by reason", ""]
        by_reason = sorted(summary.failed_by_reason.items(), key=lambda kv: -kv[1])
        lines += _table(
            ["reason", "rows", "share", "what to do"],
            [(f"`{r}`", f"{n:,}", share(n), ADVICE.get(r, "")) for r, n in by_reason],
        )
        lines.append("")
        failed_path = directory / "failed.parquet"
        if failed_path.is_file():
            patterns, kinds = failure_patterns(failed_path, top=top)
            lines += [
                "### Most common failures",
                "",
                f"{kinds:,} kinds of failure (details alike but for numbers and values)"
                + (f"; the {len(patterns)} most common:" if kinds > len(patterns) else ":"),
                "",
            ]
            lines += _table(
                ["reason", "rows", "detail (an example)", "example source rows"],
                [
                    (f"`{p.reason}`", f"{p.count:,}", p.example_detail, ", ".join(map(str, p.example_rows)))
                    for p in patterns
                ],
            )
            lines += ["", "Every failed row is in `failed.parquet` with its `source_row` and `detail`.", ""]
    lines += ["## Throughput", ""]
    throttle = summary.throttle
    speed = [
        ("duration", _duration(summary.duration_seconds)),
        ("keys/s, overall", f"{summary.keys_per_second:,.0f}"),
        ("requests (batches)", f"{summary.requests:,} ({summary.batches:,})"),
    ]
    if throttle:
        speed += [
            (
                "requests in flight: peak / final / cap",
                "{peak_concurrency} / {final_concurrency} / {max_concurrency}".format(**throttle),
            ),
            ("keys a request, at the end", f"{throttle['final_batch_size']:,}"),
            ("seconds spent waiting for the rate limit", f"{throttle['paced_seconds']:,.1f}"),
            ("answers that were 429", f"{throttle['rate_limited_answers']:,}"),
        ]
        if throttle.get("rate_limit"):
            speed += [
                (
                    "workspace rate limit: requests a window / left free",
                    f"{throttle['rate_limit']:,} / {throttle['rate_limit_headroom']:.0%}",
                ),
                (
                    "share of the limit this run used: peak / mean",
                    f"{throttle['rate_limit_share_peak']:.0%} / {throttle['rate_limit_share_mean']:.0%}",
                ),
                (
                    "the whole workspace's highest use, as answers stated it",
                    f"{throttle.get('rate_limit_workspace_peak', 0.0):.0%}",
                ),
            ]
    lines += _table(["", ""], speed)
    lines.append("")
    if timeline is not None and len(timeline.samples) > 1:
        if plot_timeline(timeline, directory / PLOT_FILE, title=f"{title}: throughput and concurrency"):
            written.append(directory / PLOT_FILE)
            lines += [f"![keys/s and requests in flight over time]({PLOT_FILE})", ""]
        else:
            lines += ["(Install matplotlib, the `report` extra, for a plot of this table.)", ""]
        lines += _table(
            ["seconds", "rows done", "keys/s", "in flight", "limit", "keys a request"],
            [
                (
                    f"{s.seconds:,.0f}",
                    f"{s.done:,}",
                    f"{rate:,.0f}",
                    s.in_flight,
                    s.limit,
                    f"{s.batch_size:,}",
                )
                for s, (_, rate) in _every_nth(
                    list(zip(timeline.samples[1:], timeline.rates(), strict=False)), 20
                )
            ],
        )
        lines.append("")
    if outputs:
        lines += ["## Outputs", ""]
        lines += [f"- {name}: `{where}`" for name, where in outputs.items()]
        lines.append("")
    (directory / REPORT_FILE).write_text("\n".join(lines), encoding="utf-8")
    return written


def _every_nth(items: list[Any], most: int) -> list[Any]:
    """At most ``most`` of ``items``, evenly spread, the last one always in."""
    if len(items) <= most:
        return items
    step = len(items) / most
    picked = [items[int(i * step)] for i in range(most - 1)]
    return [*picked, items[-1]]
