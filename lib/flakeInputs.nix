/**
  `forge.lib.flakeInputs`: flake input hygiene from a parsed `flake.lock`.

  When an input of your flake has its own `nixpkgs` input, the lock holds a second nixpkgs
  (node `nixpkgs_2`): a second evaluation, a second download, and two glibcs in one closure.
  `duplicates` finds every input that pulls such a second copy of something already in the lock
  and says which `follows` fixes it; `check` turns that into a flake check.

  Two lock nodes are copies of the same input when their locked source is the same repository:
  same type and, case-insensitively, owner and repository for `github`/`gitlab`/`sourcehut`; the
  same URL without its query for `git`/`hg`; for `tarball`/`file`, the repository the URL names
  (GitHub archives, FlakeHub, the NixOS channels are nixpkgs), else the URL the flake asked for
  (`original`) without its query, so two versions of one source are copies; the same `path` for
  `path`. Your own flake's direct inputs are never reported (two root inputs of one repository,
  say `nixpkgs` and `nixpkgs-stable`, are deliberate); only the copies that other inputs bring in,
  and never one pinned to an exact revision on purpose (`original.rev`, as NixOS/nix pins its
  `nixpkgs-23-11` and `nixpkgs-regression`).
  The copy to follow is the one your flake names directly (preferring an input named like the
  lock node), else the one nearest the root.
*/
{ lib }:
let
  inherit (builtins)
    attrNames
    concatMap
    concatStringsSep
    elem
    filter
    foldl'
    groupBy
    head
    isAttrs
    isPath
    isString
    length
    map
    match
    replaceStrings
    sort
    ;
  inherit (lib.errors) showAttrName show;

  lowerCase =
    replaceStrings
      [ "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" ]
      [ "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" ];

  withoutQuery =
    url:
    let
      m = match "([^?]*)[?].*" url;
    in
    if m == null then url else head m;

  # The repository a tarball URL comes from, when the URL says: GitHub archives, FlakeHub
  # releases, and the NixOS channels (which are nixpkgs).
  tarballRepository =
    url:
    let
      github = match "https?://(codeload[.])?github[.]com/([^/]+)/([^/]+)/(archive|tar[.]gz|legacy[.]tar[.]gz)/.*" url;
      flakehub = match "https?://(api[.])?flakehub[.]com/f/(pinned/)?([^/]+)/([^/]+)/.*" url;
      channel = match "https?://(channels[.]nixos[.]org|releases[.]nixos[.]org/nixos|nixos[.]org/channels)/.*" url;
    in
    if github != null then
      "github:${lowerCase (builtins.elemAt github 1)}/${lowerCase (builtins.elemAt github 2)}"
    else if flakehub != null then
      "flakehub:${lowerCase (builtins.elemAt flakehub 2)}/${lowerCase (builtins.elemAt flakehub 3)}"
    else if channel != null then
      "github:nixos/nixpkgs"
    else
      null;

  # A stable identity for the repository a lock node comes from, or null when unknown. A tarball
  # or file is identified by what the flake asked for (`original`), not by the URL of the one
  # version locked, so two versions of one source are seen as copies.
  sourceOf =
    node:
    let
      l = node.locked or null;
      t = if isAttrs l then l.type or null else null;
      o = node.original or { };
      url = if isAttrs o && isString (o.url or null) then o.url else l.url;
    in
    if t == "github" || t == "gitlab" || t == "sourcehut" then
      "${t}:${lowerCase (l.owner or "")}/${lowerCase (l.repo or "")}"
      + (if l ? host then "@${lowerCase l.host}" else "")
    else if (t == "tarball" || t == "file") && l ? url then
      (
        let
          repo = tarballRepository url;
        in
        if repo != null then repo else "${t}:${withoutQuery url}"
      )
    else if elem t [ "git" "hg" "mercurial" ] && l ? url then
      "${t}:${withoutQuery l.url}"
    else if t == "path" && l ? path then
      "path:${l.path}"
    else if t == "indirect" && l ? id then
      "indirect:${l.id}"
    else
      null;

  # A deliberate pin: the flake that declared the input asked for one exact revision
  # (`github:NixOS/nixpkgs/<rev>`, `?rev=`, a GitHub archive of a commit), as NixOS/nix pins
  # `nixpkgs-23-11` and `nixpkgs-regression` next to its `nixpkgs`. Such a copy is on purpose:
  # it is never reported, nor suggested as the one to follow.
  pinned =
    node:
    let
      o = node.original or { };
      url = if isAttrs o then o.url or "" else "";
    in
    isAttrs o
    && (
      o ? rev
      || (isString url && match ".*[?&]rev=[0-9a-f]{40}.*" url != null)
      || (isString url && match "https?://(codeload[.])?github[.]com/[^/]+/[^/]+/(archive|tar[.]gz)/[0-9a-f]{40}([.]tar[.]gz)?" url != null)
    );

  readLockAt =
    where: lock:
    let
      # A path, or a string naming one (`"${self}/flake.lock"`); anything else must be parsed.
      isFile = isPath lock || (isString lock && match "/.*" lock != null);
      parsed = if isFile then builtins.fromJSON (builtins.readFile lock) else lock;
    in
    if isAttrs parsed && isAttrs (parsed.nodes or null) then
      parsed
    else
      lib.errors.throw {
        inherit where;
        kind = "bad-lock";
        message = "expected a parsed flake.lock (an attribute set with `nodes`), got ${lib.errors.describe parsed}";
        context.lock = parsed;
        suggestions = [ "${where} (builtins.fromJSON (builtins.readFile ./flake.lock))" ];
      };

  showInputPath = path: concatStringsSep "/" path;
  followsAttr = path: concatStringsSep "." (concatMap (n: [ "inputs" (showAttrName n) ]) path) + ".follows";

  findDuplicates =
    where: lockArg: ignore:
    let
      lock = readLockAt where lockArg;
      nodes = lock.nodes;
      rootName = lock.root or "root";
      inputsOf = name: nodes.${name}.inputs or { };
      # Direct (non-follows) edges out of a node, sorted by input name.
      edges =
        name:
        let
          ins = inputsOf name;
        in
        filter (e: isString e.target && nodes ? ${e.target}) (
          map (n: {
            parent = name;
            input = n;
            target = ins.${n};
          }) (attrNames ins)
        );

      # Breadth-first from the root: node name -> shortest input path (first by name on ties).
      walk =
        frontier: seen:
        if frontier == [ ] then
          seen
        else
          let
            found = concatMap (n: map (e: e // { path = seen.${n} ++ [ e.input ]; }) (edges n)) frontier;
            fresh = foldl' (
              acc: e: if seen ? ${e.target} || acc ? ${e.target} then acc else acc // { ${e.target} = e.path; }
            ) { } found;
          in
          walk (attrNames fresh) (seen // fresh);
      reach = walk [ rootName ] { ${rootName} = [ ]; };

      candidates = filter (n: n != rootName && reach ? ${n} && sourceOf nodes.${n} != null) (attrNames nodes);
      groups = groupBy (n: sourceOf nodes.${n}) candidates;
      dupGroups = filter (s: length groups.${s} > 1) (attrNames groups);

      rootEdges = edges rootName;

      canonicalOf =
        source:
        let
          members = groups.${source};
          direct = filter (e: elem e.target members) rootEdges;
          named = filter (e: e.input == e.target) direct;
          byDepth = sort (
            a: b:
            let
              pa = pinned nodes.${a};
              pb = pinned nodes.${b};
              la = length reach.${a};
              lb = length reach.${b};
            in
            (!pa && pb) || (pa == pb && (la < lb || (la == lb && a < b)))
          ) members;
        in
        if named != [ ] then
          { node = (head named).target; follows = (head named).input; }
        else if direct != [ ] then
          { node = (head direct).target; follows = (head direct).input; }
        else
          { node = head byDepth; follows = showInputPath reach.${head byDepth}; };

      allEdges = concatMap edges (filter (n: reach ? ${n}) (attrNames nodes));

      entriesFor =
        source:
        let
          canon = canonicalOf source;
          members = groups.${source};
          bad = filter (
            e: e.parent != rootName && e.target != canon.node && elem e.target members && !(pinned nodes.${e.target})
          ) allEdges;
        in
        map (
          e:
          let
            path = reach.${e.parent} ++ [ e.input ];
          in
          {
            input = showInputPath path;
            inherit path source;
            node = e.target;
            duplicateOf = canon.node;
            follows = canon.follows;
            suggestion = "${followsAttr path} = ${show canon.follows};";
          }
        ) bad;
      entries = filter (e: !(elem e.input ignore)) (concatMap entriesFor dupGroups);
    in
    sort (a: b: a.input < b.input) entries;

  formatAt =
    where: duplicates:
    if duplicates == [ ] then
      "${where}: no input pulls a second copy of another input"
    else
      concatStringsSep "\n" (
        [
          "${where}: ${
            if length duplicates == 1 then "1 input pulls" else "${toString (length duplicates)} inputs pull"
          } a second copy of an input already in flake.lock; add to flake.nix:"
        ]
        ++ map (d: "  ${d.suggestion}  # ${d.input} is lock node ${show d.node}, a copy of ${d.source} (node ${show d.duplicateOf})") duplicates
        ++ [ "  then run: nix flake lock" ]
      );

  flakeInputs = {
    /**
      Read and parse a `flake.lock` file.

      # Inputs

      `path`
      : path to the lock file, e.g. `./flake.lock`

      # Type

      ```
      readLock :: Path -> AttrSet
      ```

      # Examples
      :::{.example}
      ## `forge.lib.flakeInputs.readLock` usage example

      ```nix
      (forge.lib.flakeInputs.readLock ./flake.lock).version
      => 7
      ```
      :::
    */
    readLock = path: readLockAt "forge.lib.flakeInputs.readLock" path;

    /**
      The source identity used to decide that two lock nodes are copies of one input (see above),
      or `null` when the node has no locked source.

      # Inputs

      `node`
      : one value of a lock's `nodes`

      # Type

      ```
      sourceOf :: AttrSet -> String | null
      ```

      # Examples
      :::{.example}
      ## `forge.lib.flakeInputs.sourceOf` usage example

      ```nix
      forge.lib.flakeInputs.sourceOf { locked = { type = "github"; owner = "NixOS"; repo = "nixpkgs"; rev = "abc"; }; }
      => "github:nixos/nixpkgs"

      forge.lib.flakeInputs.sourceOf { inputs = { }; }
      => null
      ```
      :::
    */
    inherit sourceOf;

    /**
      Every input that pulls a second copy of an input already in the lock, sorted by input path,
      each with the `follows` line that fixes it. `lock` is a parsed `flake.lock` (or a path to
      one). Returns `[ ]` for a clean lock, an empty lock, or a lock with no inputs.

      # Inputs

      `lock`
      : a parsed `flake.lock`, or a path to it

      # Type

      ```
      duplicates :: (AttrSet | Path) -> [{ input :: String, path :: [String], node :: String, source :: String, duplicateOf :: String, follows :: String, suggestion :: String }]
      ```

      # Examples
      :::{.example}
      ## `forge.lib.flakeInputs.duplicates` usage example

      ```nix
      map (d: d.suggestion) (forge.lib.flakeInputs.duplicates {
        version = 7;
        root = "root";
        nodes = {
          root.inputs = { nixpkgs = "nixpkgs"; tool = "tool"; };
          nixpkgs.locked = { type = "github"; owner = "NixOS"; repo = "nixpkgs"; rev = "a"; };
          tool = { inputs.nixpkgs = "nixpkgs_2"; locked = { type = "github"; owner = "acme"; repo = "tool"; rev = "b"; }; };
          nixpkgs_2.locked = { type = "github"; owner = "NixOS"; repo = "nixpkgs"; rev = "c"; };
        };
      })
      => [ "inputs.tool.inputs.nixpkgs.follows = \"nixpkgs\";" ]
      ```
      :::
    */
    duplicates = lock: findDuplicates "forge.lib.flakeInputs.duplicates" lock [ ];

    /**
      Render a `duplicates` result as a message: one `follows` line per duplicate, with the lock
      nodes involved, then the command to relock.

      # Inputs

      `duplicates`
      : the result of `duplicates`

      # Type

      ```
      format :: [AttrSet] -> String
      ```

      # Examples
      :::{.example}
      ## `forge.lib.flakeInputs.format` usage example

      ```nix
      forge.lib.flakeInputs.format [ ]
      => "forge.lib.flakeInputs: no input pulls a second copy of another input"
      ```
      :::
    */
    format = formatAt "forge.lib.flakeInputs";

    /**
      A check derivation that fails, listing every duplicate and the `follows` that fixes it, when
      the lock has duplicates, and succeeds (its output is the report) otherwise. The duplicates
      are found at evaluation time; the derivation only prints them, so it builds with nothing but
      `pkgs.runCommand` (real nixpkgs, or any attribute set providing a compatible `runCommand`).

      # Inputs

      `args`
      : `{ pkgs, lock, ignore ? [ ], name ? "flake-inputs" }`; `lock` is a parsed `flake.lock` or
        a path to it; `ignore` lists input paths (`"tool/nixpkgs"`) that may stay duplicated

      # Type

      ```
      check :: { pkgs :: AttrSet, lock :: AttrSet | Path, ignore :: [String], name :: String } -> Derivation
      ```

      # Examples
      :::{.example}
      ## `forge.lib.flakeInputs.check` usage example

      ```nix
      (forge.lib.flakeInputs.check { inherit pkgs; lock = { version = 7; root = "root"; nodes.root = { }; }; }).name
      => "flake-inputs"
      ```
      :::
    */
    check =
      {
        pkgs,
        lock,
        ignore ? [ ],
        name ? "flake-inputs",
      }:
      let
        where = "forge.lib.flakeInputs.check";
        found = findDuplicates where lock ignore;
      in
      assert lib.errors.assertMsg where (isAttrs pkgs && pkgs ? runCommand)
        "`pkgs` must provide `runCommand`; pass nixpkgs.legacyPackages.\${system}";
      assert lib.errors.assertType where "ignore" "list" ignore;
      pkgs.runCommand name {
        report = formatAt where found;
        failed = found != [ ];
      } ''
        if [ -n "$failed" ]; then
          printf '%s\n' "$report" >&2
          exit 1
        fi
        printf '%s\n' "$report" > "$out"
      '';
  };
in
flakeInputs
