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


# Hostile YAML: YAML 1.1 words, bad tags, anchors and aliases, merge keys, deep nesting, bombs,
# and keys Forge's schemas know, so that random documents also reach the validators.
_yaml_scalar = st.one_of(
    st.sampled_from(["on", "off", "yes", "no", "010", "0x1F", "0o17", "~", "null", "1e400", "-.inf", ".nan",
                     "2001-12-14", "12:30:45", "!!int abc", "!!int 0x", "!!timestamp 2001-13-45", "!foo bar",
                     "!!binary aGk=", "!!binary ???", "!!float x", "!!bool maybe", "!!str 1", "!!null 1",
                     "!!python/object:os.system [ls]", "!!set {a, b}", "!!omap [a: 1]", "*a", "*b", "*nope",
                     "'quoted'", '"\\u0000"', '"\\ud800"', "123456789012345678901234567890", "api", "",
                     "services/api", "https://u:p@h/x", "{service}", "?", "- x", "x: y", "@", "`", "%"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6),
)
_yaml_key = st.one_of(
    st.sampled_from(["version", "project", "registry", "gitops", "environments", "services", "name", "host",
                     "connection", "roles", "databases", "type", "path", "on", "off", "010", "<<", "? a",
                     "&a k", "*a", "!!int 1", "[a]", "{a: b}"]),
    st.from_regex(r"\A[a-z0-9_]{1,6}\Z"),
)


def _flow_collections(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.lists(inner, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.lists(st.tuples(_yaml_key, inner), max_size=4).map(
            lambda kv: "{" + ", ".join(f"{k}: {v}" for k, v in kv) + "}"),
        st.tuples(st.sampled_from(["&a ", "&b ", "!foo ", "!!map ", "!!seq ", ""]), inner).map("".join),
    )


_yaml_value = st.recursive(_yaml_scalar, _flow_collections, max_leaves=24)


def _bomb(width: int, levels: int) -> str:
    lines = [f"l0: &l0 [{', '.join(['x'] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


hostile_yaml = st.one_of(
    st.lists(st.tuples(_yaml_key, _yaml_value), max_size=6).map(
        lambda kv: "".join(f"{k}: {v}\n" for k, v in kv)),
    st.tuples(st.integers(1, 12), st.integers(1, 12)).map(lambda wl: _bomb(*wl)),
    st.integers(1, 400).map(lambda n: "x: " + "[" * n + "]" * n + "\n"),
    st.integers(1, 300).map(lambda n: "".join("  " * i + f"k{i}:\n" for i in range(n))),
    st.text(alphabet=st.sampled_from(list("[]{}:,-&*!|>'\"#%@` \n\tax01\\")), max_size=60),
)
