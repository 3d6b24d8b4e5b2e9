"""How counts read in messages: `plural(1, "sequence")` is "1 sequence", `plural(2, "identity")`
"2 identities". Every user-facing count goes through `plural`, so none says "1 sequences"."""

from __future__ import annotations


def plural(count: int, noun: str, nouns: str | None = None, *, grouped: bool = False) -> str:
    """`count` and `noun`, in the plural unless `count` is 1. `nouns`: an irregular plural (default:
    a consonant + y becomes -ies, e.g. identity -> identities, query -> queries; else + s);
    `grouped`: thousands separators (12,345)."""
    if nouns is None:
        nouns = noun[:-1] + "ies" if noun.endswith("y") and noun[-2:-1] not in "aeiou" else noun + "s"
    number = f"{count:,}" if grouped else str(count)
    return f"{number} {noun if count == 1 else nouns}"
