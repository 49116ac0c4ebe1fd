# Cases for forge.lib.sources. Each is { expr; expected; }.
{ lib, fails }:
let
  s = lib.sources;
  rev = "0123456789abcdef0123456789abcdef01234567";
  narHash = "sha256-l6c2SBBuxVKdJQFqQtIQxqJV+rDG+egt8I+fv/u6quI=";
  pin = { url = "https://example.com/a.git"; ref = "refs/tags/v1"; inherit rev narHash; };
in
{
  args-branch-or-tag-keep-the-ref = {
    expr = s.fetchGitArgs pin;
    expected = { url = "https://example.com/a.git"; ref = "refs/tags/v1"; inherit rev narHash; };
  };
  args-a-commit-fetches-all-refs = {
    expr = s.fetchGitArgs (pin // { ref = null; });
    expected = { url = "https://example.com/a.git"; allRefs = true; inherit rev narHash; };
  };
  args-keyword-and-interpolation-in-url-pass-through = {
    expr = (s.fetchGitArgs (pin // { url = "file:///x/\${y}/in"; })).url;
    expected = "file:///x/\${y}/in";
  };
  args-short-rev-refused = { expr = fails (s.fetchGitArgs (pin // { rev = "0123456"; })); expected = true; };
  args-base32-hash-refused = {
    expr = fails (s.fetchGitArgs (pin // { narHash = "1qmapbxvz7wgy0nyiyf6n3x5b8n623944sh14nfm5ibf2143d9wp"; }));
    expected = true;
  };
  args-missing-ref-refused = { expr = fails (s.fetchGitArgs (builtins.removeAttrs pin [ "ref" ])); expected = true; };
  args-not-an-attrset-refused = { expr = fails (s.fetchGitArgs "https://example.com/a.git"); expected = true; };
  fetch-all-empty = { expr = s.fetchAll { }; expected = { }; };
  fetch-all-not-attrs-refused = { expr = fails (s.fetchAll [ pin ]); expected = true; };
}
