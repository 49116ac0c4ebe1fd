/**
  forge.lib.apps: the flake-app builders the generated `nix/forge/default.nix` uses.

  An app is `{ type = "app"; program = "<store path>"; meta.description = "…"; }`. Packages
  come from the `pkgs` argument (`writeShellApplication`); nothing here reads the environment.
*/
{ lib }:
let
  fn = name: "forge.lib.apps.${name}";

  /**
    Quote a string for POSIX shells: `'…'` with embedded quotes written `'\''`.

    # Inputs
    `s`: the string (or anything `toString` accepts).

    # Type
    ```
    escapeShellArg :: String -> String
    ```

    # Examples
    ```nix
    escapeShellArg "it's"
    => "'it'\\''s'"
    ```
  */
  escapeShellArg = s: "'" + builtins.replaceStrings [ "'" ] [ "'\\''" ] (toString s) + "'";

  /**
    Quote every element of a list for the shell and join with spaces.

    # Inputs
    `args`: a list of strings.

    # Type
    ```
    escapeShellArgs :: [String] -> String
    ```

    # Examples
    ```nix
    escapeShellArgs [ "deploy" "api:prod" "a b" ]
    => "'deploy' 'api:prod' 'a b'"
    ```
  */
  escapeShellArgs = args: builtins.concatStringsSep " " (map escapeShellArg args);

  /**
    Look up a dotted attribute path (`"python3Packages.pytest"`) in `pkgs`, with an error that
    names the missing attribute.

    # Inputs
    `pkgs`: the package set. `path`: the dotted path.

    # Type
    ```
    getPackage :: AttrSet -> String -> Derivation
    ```

    # Examples
    ```nix
    getPackage { a.b = 1; } "a.b"
    => 1
    ```
  */
  getPackage = pkgs: path:
    let
      parts = builtins.filter builtins.isString (builtins.split "\\." path);
      step = acc: part:
        if builtins.isAttrs acc && acc ? ${part} then acc.${part}
        else throw "${fn "getPackage"}: pkgs has no attribute ${builtins.toJSON path} (missing ${builtins.toJSON part}); add it to your package set or change the service's dev tools";
    in
    builtins.foldl' step pkgs parts;

  /**
    A flake app running a shell script.

    # Inputs
    `pkgs`: a nixpkgs package set (needs `writeShellApplication`).
    `name`: the app (and script) name. `description`: `meta.description`.
    `text`: the script body (bash, `set -euo pipefail`). `runtimeInputs`: packages put on PATH.

    # Type
    ```
    mkApp :: { pkgs, name, description, text, runtimeInputs ? [ ] } -> App
    ```

    # Examples
    ```nix
    (mkApp { pkgs = { writeShellApplication = a: { outPath = "out-${a.name}"; }; }; name = "deploy:api"; description = "Deploy api"; text = "true"; }).program
    => "out-deploy-api/bin/deploy-api"
    ```
  */
  mkApp = { pkgs, name, description, text, runtimeInputs ? [ ] }:
    let
      safeName = builtins.replaceStrings [ ":" "/" ] [ "-" "-" ] name;
      drv = pkgs.writeShellApplication { name = safeName; inherit text runtimeInputs; };
    in
    if !(builtins.isString description) || description == "" then
      throw "${fn "mkApp"}: app ${builtins.toJSON name} needs a non-empty description, e.g. mkApp { name = \"deploy:api\"; description = \"Deploy api\"; … }"
    else {
      type = "app";
      program = "${drv}/bin/${safeName}";
      meta.description = description;
    };

  /**
    An app that runs the Forge runtime: `exec forge ARGS… --plan PLAN "$@"`.

    # Inputs
    `runtime`: the package providing the `forge` command. `args`: the command and its fixed
    arguments. `plan`: the JSON plan (a path; it is copied to the store).

    # Type
    ```
    mkForgeApp :: { pkgs, runtime, name, description, args, plan } -> App
    ```

    # Examples
    ```nix
    (mkForgeApp { pkgs = { writeShellApplication = a: { outPath = "out-${a.name}"; }; }; runtime = "forge"; name = "deploy:api"; description = "Deploy api"; args = [ "deploy" "api:staging" ]; plan = "plan.json"; }).meta.description
    => "Deploy api"
    ```
  */
  mkForgeApp = { pkgs, runtime, name, description, args, plan }:
    mkApp {
      inherit pkgs name description;
      runtimeInputs = [ runtime ];
      text = "exec forge ${escapeShellArgs args} --plan ${escapeShellArg "${plan}"} \"$@\"";
    };

  /**
    A development app (`test:S`, `lint:S`, `fmt:S`, `fmt-check:S`): runs `command` in the
    service's directory (relative to where `nix run` is called: the repository root), with the
    service type's tools on PATH. A `null` command makes an app that explains how to set one.

    # Inputs
    `command`: a shell command, or `null`. `path`: the service's directory. `tools`: dotted
    attribute paths in `pkgs` put on PATH. `setting`: the deploy.yaml key named when unset.

    # Type
    ```
    mkDevApp :: { pkgs, name, description, command, path, tools ? [ ], setting } -> App
    ```

    # Examples
    ```nix
    (mkDevApp { pkgs = { writeShellApplication = a: { outPath = "out-${a.name}"; }; }; name = "test:api"; description = "Run api's tests"; command = "cargo test"; path = "services/api"; setting = "services.api.dev.test"; }).type
    => "app"
    ```
  */
  mkDevApp = { pkgs, name, description, command, path, tools ? [ ], setting }:
    mkApp {
      inherit pkgs name description;
      runtimeInputs = map (getPackage pkgs) tools;
      text =
        if command == null then ''
          echo ${escapeShellArg "${name}: no command is configured; set ${setting} in deploy.yaml and run forgegen sync"} >&2
          exit 2
        ''
        else ''
          if [ ! -d ${escapeShellArg path} ]; then
            echo ${escapeShellArg "${name}: directory ${path} not found; run this app from the repository root"} >&2
            exit 2
          fi
          cd ${escapeShellArg path}
          ${command} "$@"
        '';
    };

  /**
    Every app of a project, from the table `forgegen sync` writes (`nix/forge/apps.json`).
    Values are lazy: evaluating one app evaluates only its own service.

    # Inputs
    `table`: app name → `{ kind = "forge" | "dev" | "generator"; description; … }`.
    `services`: service name → the generated service attrset (with `plan`).
    `projectPlan`: the plan for product-wide apps (`release`, `status`).
    `runtime`: the package with the `forge` and `forgegen` commands.

    # Type
    ```
    mkProjectApps :: { pkgs, runtime, services, table, projectPlan } -> AttrSet
    ```

    # Examples
    ```nix
    builtins.attrNames (mkProjectApps { pkgs = { writeShellApplication = a: { outPath = "out-${a.name}"; }; }; runtime = "forge"; services = { }; projectPlan = "project.json";
      table = { status = { kind = "forge"; description = "Status"; args = [ "status" ]; }; }; })
    => [ "status" ]
    ```
  */
  mkProjectApps = { pkgs, runtime, services, table, projectPlan }:
    builtins.mapAttrs
      (name: entry:
        let
          service =
            if !(entry ? service) then null
            else if services ? ${entry.service} then services.${entry.service}
            else throw "${fn "mkProjectApps"}: app ${builtins.toJSON name} names service ${builtins.toJSON entry.service}, which is not in nix/forge/services; run forgegen sync";
          plan = if service == null then projectPlan else service.plan;
        in
        if entry.kind == "forge" then
          mkForgeApp { inherit pkgs runtime name plan; inherit (entry) description args; }
        else if entry.kind == "dev" then
          mkDevApp { inherit pkgs name; inherit (entry) description command path tools setting; }
        else if entry.kind == "generator" then
          mkApp {
            inherit pkgs name; inherit (entry) description;
            runtimeInputs = [ runtime ];
            text = "exec forgegen ${escapeShellArgs entry.args} \"$@\"";
          }
        else throw "${fn "mkProjectApps"}: app ${builtins.toJSON name} has unknown kind ${builtins.toJSON entry.kind}; expected \"forge\", \"dev\" or \"generator\"")
      table;
in
{
  inherit escapeShellArg escapeShellArgs getPackage mkApp mkForgeApp mkDevApp mkProjectApps;
}
