/**
  `forge.lib.platform`: Nix system strings, per-system outputs, and OCI platforms.

  A Nix system string is `<cpu>-<kernel>` (`x86_64-linux`). An OCI platform is
  `{ os; architecture; variant?; }`, written `os/architecture[/variant]` (`linux/amd64`). Image
  tags use `ociArch` (`amd64`, `arm64`, `armv7`). Nothing here reads the host: pass the systems
  you build for; the host system is never consulted (that would break pure flake evaluation).
*/
{ lib }:
let
  inherit (builtins)
    attrNames
    concatStringsSep
    elem
    filter
    foldl'
    head
    isAttrs
    isFunction
    isList
    isString
    listToAttrs
    map
    match
    ;
  inherit (lib.errors) show showChoices describe;

  throwAt =
    where: kind: message: context: suggestions:
    lib.errors.throw {
      inherit
        where
        kind
        message
        context
        suggestions
        ;
    };

  # System string → OCI platform, for every system Forge can describe.
  table = {
    "aarch64-darwin" = {
      os = "darwin";
      architecture = "arm64";
    };
    "aarch64-linux" = {
      os = "linux";
      architecture = "arm64";
    };
    "armv6l-linux" = {
      os = "linux";
      architecture = "arm";
      variant = "v6";
    };
    "armv7l-linux" = {
      os = "linux";
      architecture = "arm";
      variant = "v7";
    };
    "i686-linux" = {
      os = "linux";
      architecture = "386";
    };
    "powerpc64le-linux" = {
      os = "linux";
      architecture = "ppc64le";
    };
    "riscv64-linux" = {
      os = "linux";
      architecture = "riscv64";
    };
    "s390x-linux" = {
      os = "linux";
      architecture = "s390x";
    };
    "x86_64-darwin" = {
      os = "darwin";
      architecture = "amd64";
    };
    "x86_64-linux" = {
      os = "linux";
      architecture = "amd64";
    };
  };

  ociString = p: "${p.os}/${p.architecture}" + (if p ? variant then "/${p.variant}" else "");

  # "linux/arm64/v8" is how some tools spell plain arm64.
  ociAliases = {
    "linux/arm64/v8" = "aarch64-linux";
    "darwin/arm64/v8" = "aarch64-darwin";
  };

  byOci = listToAttrs (map (s: { name = ociString table.${s}; value = s; }) (attrNames table)) // ociAliases;

  checkSystem =
    where: system:
    if !isString system then
      throwAt where "bad-system" "a system must be a string such as \"x86_64-linux\", got ${describe system}" { inherit system; } [ ]
    else if !(table ? ${system}) then
      throwAt where "unknown-system" "unknown system ${show system}" { inherit system; } [
        "use one of ${showChoices platform.knownSystems}"
      ]
    else
      system;

  parseAt =
    where: system:
    let
      m = if isString system then match "([A-Za-z0-9_]+)-([A-Za-z0-9_]+)" system else null;
    in
    if m == null then
      throwAt where "bad-system" "${show system} is not a Nix system string; expected \"<cpu>-<kernel>\"" {
        inherit system;
      } [ "${where} \"x86_64-linux\"" ]
    else
      {
        cpu = head m;
        kernel = builtins.elemAt m 1;
      };

  checkSystems =
    where: systems:
    if !isList systems then
      throwAt where "bad-systems" "`systems` must be a list of system strings, got ${describe systems}" {
        inherit systems;
      } [ "${where} [ \"x86_64-linux\" \"aarch64-linux\" ] (system: { … })" ]
    else
      # Strict, so a bad system fails even when nothing uses it as a key.
      let
        checked = map (checkSystem where) systems;
      in
      builtins.deepSeq checked checked;

  checkFunction =
    where: f:
    if isFunction f then
      f
    else
      throwAt where "bad-function" "the second argument must be a function from a system string, got ${describe f}" { } [
        "${where} [ \"x86_64-linux\" ] (system: { packages.default = …; })"
      ];

  platform = {
    /**
      The systems Forge supports by default, sorted: `eachDefaultSystem` and consumers that do not
      choose their own use these.

      # Type

      ```
      supportedSystems :: [String]
      ```

      # Examples
      :::{.example}
      ## `forge.lib.platform.supportedSystems` usage example

      ```nix
      forge.lib.platform.supportedSystems
      => [ "aarch64-darwin" "aarch64-linux" "x86_64-darwin" "x86_64-linux" ]
      ```
      :::
    */
    supportedSystems = [
      "aarch64-darwin"
      "aarch64-linux"
      "x86_64-darwin"
      "x86_64-linux"
    ];

    /**
      Every system string Forge can map to an OCI platform, sorted. Functions that take a system
      accept exactly these and name them when given anything else.

      # Type

      ```
      knownSystems :: [String]
      ```

      # Examples
      :::{.example}
      ## `forge.lib.platform.knownSystems` usage example

      ```nix
      builtins.elem "riscv64-linux" forge.lib.platform.knownSystems
      => true
      ```
      :::
    */
    knownSystems = attrNames table;

    /**
      Split a system string into `{ cpu; kernel; }`. Accepts any well-formed `<cpu>-<kernel>`
      string, known or not.

      # Inputs

      `system`
      : a Nix system string

      # Type

      ```
      parse :: String -> { cpu :: String, kernel :: String }
      ```

      # Examples
      :::{.example}
      ## `forge.lib.platform.parse` usage example

      ```nix
      forge.lib.platform.parse "x86_64-linux"
      => { cpu = "x86_64"; kernel = "linux"; }

      forge.lib.platform.parse "linux"
      => error: forge.lib.platform.parse: "linux" is not a Nix system string; expected "<cpu>-<kernel>" [bad-system]
      ```
      :::
    */
    parse = parseAt "forge.lib.platform.parse";

    /**
      Whether a system string names a Linux system (from the string alone; the system need not be
      in `knownSystems`).

      # Inputs

      `system`
      : a Nix system string

      # Type

      ```
      isLinux :: String -> Bool
      ```

      # Examples
      :::{.example}
      ## `forge.lib.platform.isLinux` usage example

      ```nix
      forge.lib.platform.isLinux "aarch64-linux"
      => true

      forge.lib.platform.isLinux "aarch64-darwin"
      => false
      ```
      :::
    */
    isLinux = system: (parseAt "forge.lib.platform.isLinux" system).kernel == "linux";

    /**
      Whether a system string names a macOS (Darwin) system.

      # Inputs

      `system`
      : a Nix system string

      # Type

      ```
      isDarwin :: String -> Bool
      ```

      # Examples
      :::{.example}
      ## `forge.lib.platform.isDarwin` usage example

      ```nix
      forge.lib.platform.isDarwin "x86_64-darwin"
      => true

      forge.lib.platform.isDarwin "x86_64-linux"
      => false
      ```
      :::
    */
    isDarwin = system: (parseAt "forge.lib.platform.isDarwin" system).kernel == "darwin";

    /**
      The OCI platform of a system: `{ os; architecture; }`, plus `variant` for 32-bit ARM.

      # Inputs

      `system`
      : one of `knownSystems`

      # Type

      ```
      toOci :: String -> { os :: String, architecture :: String, variant :: String? }
      ```

      # Examples
      :::{.example}
      ## `forge.lib.platform.toOci` usage example

      ```nix
      forge.lib.platform.toOci "aarch64-linux"
      => { architecture = "arm64"; os = "linux"; }

      forge.lib.platform.toOci "armv7l-linux"
      => { architecture = "arm"; os = "linux"; variant = "v7"; }

      forge.lib.platform.toOci "x86_64-windows"
      => error: forge.lib.platform.toOci: unknown system "x86_64-windows" [unknown-system]
      ```
      :::
    */
    toOci = system: table.${checkSystem "forge.lib.platform.toOci" system};

    /**
      The OCI platform of a system as a string, `os/architecture[/variant]`, as used by
      `docker buildx --platform` and OCI image indexes.

      # Inputs

      `system`
      : one of `knownSystems`

      # Type

      ```
      toOciString :: String -> String
      ```

      # Examples
      :::{.example}
      ## `forge.lib.platform.toOciString` usage example

      ```nix
      forge.lib.platform.toOciString "x86_64-linux"
      => "linux/amd64"

      forge.lib.platform.toOciString "aarch64-linux"
      => "linux/arm64"
      ```
      :::
    */
    toOciString = system: ociString table.${checkSystem "forge.lib.platform.toOciString" system};

    /**
      The architecture part of a Forge image tag (`<arch>-<sha7>`): the OCI architecture followed
      by the variant, if any.

      # Inputs

      `system`
      : one of `knownSystems`

      # Type

      ```
      ociArch :: String -> String
      ```

      # Examples
      :::{.example}
      ## `forge.lib.platform.ociArch` usage example

      ```nix
      map forge.lib.platform.ociArch [ "x86_64-linux" "aarch64-linux" "armv7l-linux" ]
      => [ "amd64" "arm64" "armv7" ]
      ```
      :::
    */
    ociArch =
      system:
      let
        p = table.${checkSystem "forge.lib.platform.ociArch" system};
      in
      p.architecture + (p.variant or "");

    /**
      The Nix system of an OCI platform, given as a string (`"linux/amd64"`, `"linux/arm/v7"`;
      `"linux/arm64/v8"` is accepted for `aarch64-linux`) or as `{ os; architecture; variant?; }`.

      # Inputs

      `platform`
      : an OCI platform string or attribute set

      # Type

      ```
      fromOci :: (String | { os :: String, architecture :: String, variant :: String? }) -> String
      ```

      # Examples
      :::{.example}
      ## `forge.lib.platform.fromOci` usage example

      ```nix
      forge.lib.platform.fromOci "linux/arm64"
      => "aarch64-linux"

      forge.lib.platform.fromOci { os = "linux"; architecture = "amd64"; }
      => "x86_64-linux"

      forge.lib.platform.fromOci "windows/amd64"
      => error: forge.lib.platform.fromOci: unknown OCI platform "windows/amd64" [unknown-platform]
      ```
      :::
    */
    fromOci =
      p:
      let
        where = "forge.lib.platform.fromOci";
        key =
          if isString p then
            p
          else if isAttrs p && isString (p.os or null) && isString (p.architecture or null) then
            ociString p
          else
            throwAt where "bad-platform" "expected an OCI platform string or { os; architecture; }, got ${describe p}" {
              platform = p;
            } [ "${where} \"linux/amd64\"" ];
      in
      byOci.${key} or (throwAt where "unknown-platform" "unknown OCI platform ${show key}" { platform = p; } [
        "use one of ${showChoices (attrNames byOci)}"
      ]);

    /**
      Build an attribute set with one attribute per system: `{ <system> = f <system>; }`. The
      shape of `packages`, `checks`, `devShells` in a flake (nixpkgs `genAttrs`).

      # Inputs

      `systems`
      : a list of `knownSystems`

      `f`
      : a function from a system string to any value

      # Type

      ```
      forEachSystem :: [String] -> (String -> a) -> { <system> :: a }
      ```

      # Examples
      :::{.example}
      ## `forge.lib.platform.forEachSystem` usage example

      ```nix
      forge.lib.platform.forEachSystem [ "x86_64-linux" "aarch64-linux" ] forge.lib.platform.ociArch
      => { aarch64-linux = "arm64"; x86_64-linux = "amd64"; }

      forge.lib.platform.forEachSystem [ ] (system: 1)
      => { }
      ```
      :::
    */
    forEachSystem =
      systems: f:
      let
        where = "forge.lib.platform.forEachSystem";
        g = checkFunction where f;
      in
      listToAttrs (map (system: { name = system; value = g system; }) (checkSystems where systems));

    /**
      flake-utils style: call `f` once per system; `f` returns output attributes
      (`{ packages = …; checks = …; }`) and the result moves the system one level down
      (`{ packages.<system> = …; checks.<system> = …; }`).

      # Inputs

      `systems`
      : a list of `knownSystems`

      `f`
      : a function from a system string to an attribute set of flake outputs

      # Type

      ```
      eachSystem :: [String] -> (String -> AttrSet) -> AttrSet
      ```

      # Examples
      :::{.example}
      ## `forge.lib.platform.eachSystem` usage example

      ```nix
      forge.lib.platform.eachSystem [ "x86_64-linux" "aarch64-linux" ] (system: { arch = forge.lib.platform.ociArch system; })
      => { arch = { aarch64-linux = "arm64"; x86_64-linux = "amd64"; }; }
      ```
      :::
    */
    eachSystem =
      systems: f:
      let
        where = "forge.lib.platform.eachSystem";
        g = checkFunction where f;
        step =
          acc: system:
          let
            ret = g system;
            outputs =
              if isAttrs ret then
                ret
              else
                throwAt where "bad-result" "the function must return an attribute set of outputs, got ${describe ret} for ${show system}" {
                  inherit system;
                } [ "${where} [ ${show system} ] (system: { packages.default = …; })" ];
          in
          foldl' (
            acc': name: acc' // { ${name} = (acc'.${name} or { }) // { ${system} = outputs.${name}; }; }
          ) acc (attrNames outputs);
      in
      foldl' step { } (checkSystems where systems);

    /**
      `eachSystem supportedSystems`.

      # Inputs

      `f`
      : a function from a system string to an attribute set of flake outputs

      # Type

      ```
      eachDefaultSystem :: (String -> AttrSet) -> AttrSet
      ```

      # Examples
      :::{.example}
      ## `forge.lib.platform.eachDefaultSystem` usage example

      ```nix
      builtins.attrNames (forge.lib.platform.eachDefaultSystem (system: { packages = { }; })).packages
      => [ "aarch64-darwin" "aarch64-linux" "x86_64-darwin" "x86_64-linux" ]
      ```
      :::
    */
    eachDefaultSystem = platform.eachSystem platform.supportedSystems;
  };
in
platform
