"""What prepare did to the corpus: counts by reason, bytes, tokens, speed.

`PrepareStats` accumulates during the encode pass; `build_report` turns it into
the `report.json` dict (also embedded in the manifest) and `format_summary`
into the lines the CLI prints.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from clusterlm.data.inputs import Drop

EXAMPLES_PER_REASON = 5


@dataclass
class DropLog:
    """Dropped documents by reason, with the first few sources of each reason."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, drop: Drop) -> None:
        self.counts[drop.reason] += 1
        shown = self.examples.setdefault(drop.reason, [])
        if len(shown) < EXAMPLES_PER_REASON:
            shown.append(drop.source)

    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class SplitStats:
    documents: int = 0
    bytes: int = 0  # cleaned UTF-8 bytes (separators excluded)
    tokens: int = 0  # including one EOS per document


@dataclass
class PrepareStats:
    raw_bytes: int = 0
    docs_in: int = 0
    drops: DropLog = field(default_factory=DropLog)
    clean_counts: Counter[str] = field(default_factory=Counter)
    splits: dict[str, SplitStats] = field(default_factory=dict)

    @property
    def docs_kept(self) -> int:
        return sum(s.documents for s in self.splits.values())


def build_report(
    stats: PrepareStats,
    *,
    source: str,
    files: int,
    ignored: list[str],
    skipped: list[Drop],
    tokenizer: dict[str, Any],
    seconds: dict[str, float],
    warnings: list[str],
) -> dict[str, Any]:
    kept_bytes = sum(s.bytes for s in stats.splits.values())
    tokens = sum(s.tokens for s in stats.splits.values())
    total_s = seconds.get("total", 0.0)
    encode_s = seconds.get("encode", 0.0)
    raw_mb = stats.raw_bytes / 1e6
    folders = DropLog()
    for drop in skipped:
        folders.add(drop)
    return {
        "source": source,
        "files": {
            "read": files,
            "ignored_unsupported": len(ignored),
            "ignored_examples": ignored[:EXAMPLES_PER_REASON],
            # folders not walked (unlistable_dir, symlinked_dir), by reason
            "skipped": dict(sorted(folders.counts.items())),
            "skipped_examples": dict(sorted(folders.examples.items())),
        },
        "documents": {
            "in": stats.docs_in,
            "kept": stats.docs_kept,
            "dropped": dict(sorted(stats.drops.counts.items())),
            "dropped_examples": dict(sorted(stats.drops.examples.items())),
        },
        "cleaning": {
            "html_converted": stats.clean_counts.get("html", 0),
            "newlines_normalized": stats.clean_counts.get("newlines", 0),
            "nfc_normalized": stats.clean_counts.get("nfc", 0),
            "control_chars_docs": stats.clean_counts.get("control_chars", 0),
            "control_chars_removed": stats.clean_counts.get("control_chars_removed", 0),
        },
        "bytes": {"input": stats.raw_bytes, "kept": kept_bytes},
        "tokens": {name: s.tokens for name, s in stats.splits.items()} | {"total": tokens},
        "bytes_per_token": kept_bytes / tokens if tokens else 0.0,
        "tokenizer": tokenizer,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "mb_per_s": {
            "encode": round(raw_mb / encode_s, 3) if encode_s else 0.0,
            "total": round(raw_mb / total_s, 3) if total_s else 0.0,
        },
        "warnings": warnings,
    }


def format_summary(report: dict[str, Any], out: str) -> str:
    docs = report["documents"]
    dropped = ", ".join(f"{k} {v}" for k, v in docs["dropped"].items()) or "none"
    tok = report["tokenizer"]
    lines = [
        f"prepared {out} from {report['source']}",
        f"  documents: {docs['in']:,} in, {docs['kept']:,} kept; dropped: {dropped}",
        f"  bytes: {report['bytes']['input'] / 1e6:.1f} MB in, {report['bytes']['kept'] / 1e6:.1f} MB kept",
        "  tokens: " + ", ".join(f"{k} {v:,}" for k, v in report["tokens"].items())
        + f" ({report['bytes_per_token']:.2f} bytes/token)",
        f"  tokenizer: {'trained' if tok['trained'] else 'reused'}, vocab {tok['vocab_size']:,}",
        f"  time: {report['seconds']['total']:.1f} s ({report['mb_per_s']['total']:.1f} MB/s overall, "
        f"{report['mb_per_s']['encode']:.1f} MB/s encoding)",
    ]
    for reason, examples in docs["dropped_examples"].items():
        lines.append(f"  {reason}: e.g. {', '.join(examples[:3])}")
    folders = report["files"].get("skipped_examples", {})
    for reason, examples in folders.items():
        lines.append(f"  {reason} ({report['files']['skipped'][reason]} not walked): e.g. {', '.join(examples[:3])}")
    lines += [f"  warning: {w}" for w in report["warnings"]]
    return "\n".join(lines)
