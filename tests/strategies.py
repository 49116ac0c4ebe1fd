"""Hypothesis strategies shared by the test modules (one place, STYLE.md point 34)."""

from __future__ import annotations

from hypothesis import strategies as st

# Any text Nix can hold: every character but NUL (and lone surrogates, which are not text).
nix_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"))

# Text biased towards the characters that break naive escaping.
tricky_text = st.lists(
    st.sampled_from(["$", "{", "}", "${", "$${", "''", "'", '"', "\\", "\n", "\r", "\t", " ",
                     "\\u00e9", "é", "\u2028", "😀", "a", "x", "''${", "''\\n", "#", "/*"]),
    max_size=20,
).map("".join)

any_nix_string = st.one_of(nix_text, tricky_text)

dns_label = st.from_regex(r"\A[a-z]([a-z0-9-]{0,14}[a-z0-9])?\Z")
