"""Number formatting for the report: every helper takes None (and NaN/inf) and never raises."""

from __future__ import annotations

import math

from flopwise.planning.laws import LAWS, campaign_basis

NA = "not available"


def _finite(x: float | None) -> bool:
    return x is not None and isinstance(x, int | float) and math.isfinite(x)


def sig(x: float | None, digits: int = 4) -> str:
    """``x`` to ``digits`` significant digits (the law's parameters use 4: '1.234', '406.4', '0.3392')."""
    if x is None:
        return NA
    return format(x, f".{digits}g")


def count(x: float | None) -> str:
    """1234567 → '1.23M' (parameters, tokens)."""
    if not _finite(x):
        return NA if x is None else str(x)
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def exact(x: int | float | None) -> str:
    """An exact count with thousands separators and its short form: '482,320 (482K)'."""
    if not _finite(x):
        return NA if x is None else str(x)
    return f"{round(x):,} ({count(x)})" if abs(x) >= 1000 else f"{round(x):,}"


def flops(x: float | None) -> str:
    if not _finite(x):
        return NA if x is None else str(x)
    return f"{x:.3g}"


def usd(x: float | None) -> str:
    if not _finite(x):
        return NA if x is None else str(x)
    return f"${x:,.0f}" if abs(x) >= 100 else f"${x:,.2f}"


def hours(x: float | None) -> str:
    if not _finite(x):
        return NA if x is None else str(x)
    return f"{x:,.1f}" if abs(x) >= 10 else f"{x:.3g}"


def percent(x: float | None, digits: int = 1) -> str:
    """A fraction (0.042) as a percentage ('4.2%')."""
    if not _finite(x):
        return NA if x is None else str(x)
    return f"{100 * x:.{digits}f}%"


def lr(x: float | None) -> str:
    if not _finite(x):
        return NA if x is None else str(x)
    return f"{x:.3g}"


def loss(x: float | None) -> str:
    if x is None:
        return NA
    if not math.isfinite(x):
        return str(x)
    return f"{x:.4f}"


def cell(text: object) -> str:
    """Text safe inside a Markdown table cell: pipes escaped, newlines flattened."""
    return str(text).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def duration(seconds: float | None) -> str:
    """A time span as people say it: '45s', '3m 20s', '2h 05m', '3d 4h'."""
    if not _finite(seconds):
        return NA if seconds is None else str(seconds)
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def sized_by(law: str) -> str:
    """Whose allocation sized the target: a prior law, or the campaign's own (its basis in parentheses)."""
    if law in LAWS:
        return f"the {law} prior"
    basis = campaign_basis(law)
    return f"the campaign's own allocation ({basis})" if basis else "the campaign's fitted law"
