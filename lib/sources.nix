/**
  forge.lib.sources: fetch the external git sources `forgegen lock` pins in `deploy.lock`.

  A pin is `{ url; ref; rev; narHash; }`: `ref` the full ref the commit was found on
  (`refs/heads/main`, `refs/tags/v1`) or `null` for a commit named directly, `rev` the commit,
  `narHash` the SRI hash of its tree. `forgegen sync` renders the pins into
  `nix/forge/default.nix` (`sources.<service>`); the fetch is `builtins.fetchGit` with `rev` and
  `narHash`, so it is allowed in pure evaluation and Nix refuses a tree that is not the pinned one.
*/
{ lib }:
let
  fn = name: "forge.lib.sources.${name}";
  commitRe = "[0-9a-f]{40}";
  sriRe = "sha256-[A-Za-z0-9+/]{43}=";

  problemsOf = pin:
    let
      has = k: builtins.isAttrs pin && pin ? ${k};
      str = k: has k && builtins.isString pin.${k};
    in
    if !(builtins.isAttrs pin) then [ "a pin must be an attribute set { url; ref; rev; narHash; }" ]
    else
      (if str "url" && pin.url != "" then [ ] else [ "url must be a non-empty string" ])
      ++ (if str "rev" && builtins.match commitRe pin.rev != null then [ ] else [ "rev must be a 40-character commit" ])
      ++ (if str "narHash" && builtins.match sriRe pin.narHash != null then [ ] else [ "narHash must be an SRI sha256 hash (sha256-…=)" ])
      ++ (if has "ref" && (pin.ref == null || builtins.isString pin.ref) then [ ] else [ "ref must be a string or null" ]);

  /**
    The `builtins.fetchGit` arguments of a pin: `url`, `rev`, `narHash`, and `ref` (or
    `allRefs = true` when the pin names a commit directly). Throws, naming every problem, when the
    pin is malformed.

    # Inputs
    `pin`: `{ url; ref; rev; narHash; }` as `deploy.lock` holds it.

    # Type
    ```
    fetchGitArgs :: AttrSet -> AttrSet
    ```

    # Examples
    ```nix
    fetchGitArgs { url = "https://example.com/api.git"; ref = "refs/heads/main"; rev = "0123456789abcdef0123456789abcdef01234567"; narHash = "sha256-l6c2SBBuxVKdJQFqQtIQxqJV+rDG+egt8I+fv/u6quI="; }
    => { narHash = "sha256-l6c2SBBuxVKdJQFqQtIQxqJV+rDG+egt8I+fv/u6quI="; ref = "refs/heads/main"; rev = "0123456789abcdef0123456789abcdef01234567"; url = "https://example.com/api.git"; }

    (fetchGitArgs { url = "u"; ref = null; rev = "0123456789abcdef0123456789abcdef01234567"; narHash = "sha256-l6c2SBBuxVKdJQFqQtIQxqJV+rDG+egt8I+fv/u6quI="; }).allRefs
    => true

    fetchGitArgs { url = "u"; ref = "main"; rev = "HEAD"; narHash = "x"; }
    => error: forge.lib.sources.fetchGitArgs: bad pin: rev must be a 40-character commit; narHash must be an SRI sha256 hash
    ```
  */
  fetchGitArgs = pin:
    let problems = problemsOf pin; in
    if problems != [ ] then
      throw "${fn "fetchGitArgs"}: bad pin: ${builtins.concatStringsSep "; " problems}; run forgegen lock --update and forgegen sync"
    else
      { inherit (pin) url rev narHash; }
      // (if pin.ref == null then { allRefs = true; } else { inherit (pin) ref; });

  /**
    The source tree of a pin: `builtins.fetchGit (fetchGitArgs pin)` (a store path with `rev`,
    `shortRev`, `narHash`, `outPath`); Nix checks the tree against `narHash`.

    # Inputs
    `pin`: `{ url; ref; rev; narHash; }`.

    # Type
    ```
    fetch :: AttrSet -> AttrSet
    ```

    # Examples
    ```nix
    fetch { url = "u"; ref = "main"; rev = "0"; narHash = "sha256-x"; }
    => error: forge.lib.sources.fetchGitArgs: bad pin: rev must be a 40-character commit
    ```
  */
  fetch = pin: builtins.fetchGit (fetchGitArgs pin);

  /**
    Every pin fetched: service name → its source tree (lazily: only the trees used are fetched).

    # Inputs
    `pins`: service name → `{ url; ref; rev; narHash; }` (what `forgegen sync` renders from `deploy.lock`).

    # Type
    ```
    fetchAll :: AttrSet -> AttrSet
    ```

    # Examples
    ```nix
    builtins.attrNames (fetchAll { api = { }; web = { }; })
    => [ "api" "web" ]
    ```
  */
  fetchAll = pins:
    if builtins.isAttrs pins then builtins.mapAttrs (_: fetch) pins
    else throw "${fn "fetchAll"}: expected service name -> pin, got a ${builtins.typeOf pins}";
in
{
  inherit fetchGitArgs fetch fetchAll;
}
