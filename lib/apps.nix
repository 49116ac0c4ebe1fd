/**
  forge.lib.apps: the flake-app builders the generated `nix/forge/default.nix` uses.

  An app is `{ type = "app"; program = "<store path>"; meta.description = "…"; }`. Packages
  come from the `pkgs` argument (`writeShellApplication`); nothing here reads the environment.
*/
{ lib }:
let
  fn = name: "forge.lib.apps.${name}";
  unique = builtins.foldl' (acc: x: if builtins.elem x acc then acc else acc ++ [ x ]) [ ];

  # Characters ShellCheck (run by nixpkgs' writeShellApplication) flags inside '…' or "…":
  # `$`, the backquote and `\` (SC2016, SC1003), control characters (SC1017) and the Unicode
  # quotes it takes for typos (SC1111, SC1112).
  controlChars = map (h: builtins.fromJSON "\"\\u00${h}\"") [
    "01" "02" "03" "04" "05" "06" "07" "08" "09" "0a" "0b" "0c" "0d" "0e" "0f"
    "10" "11" "12" "13" "14" "15" "16" "17" "18" "19" "1a" "1b" "1c" "1d" "1e" "1f" "7f"
  ];
  controlEscapes = map (h: "\\x${h}") [
    "01" "02" "03" "04" "05" "06" "07" "08" "09" "0a" "0b" "0c" "0d" "0e" "0f"
    "10" "11" "12" "13" "14" "15" "16" "17" "18" "19" "1a" "1b" "1c" "1d" "1e" "1f" "7f"
  ];
  shellcheckFlagged = [ "$" "`" "\\" "‘" "’" "“" "”" "″" "‶" ] ++ controlChars;

  /**
    Quote a string for bash so that it is one word, exactly the string, and passes ShellCheck
    (which nixpkgs' `writeShellApplication` runs): `'…'` with embedded quotes written `'\''`;
    or, when the string holds what ShellCheck flags in quotes (`$`, a backquote, a backslash,
    a control character, a Unicode quote), ANSI-C `$'…'` with `\`, `'` and control characters
    escaped.

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

    escapeShellArg "$HOME/`x`'\n"
    => "$'$HOME/`x`\\'\\x0a'"
    ```
  */
  escapeShellArg = s:
    let
      str = toString s;
      flagged = builtins.replaceStrings shellcheckFlagged (map (_: "") shellcheckFlagged) str != str;
    in
    if flagged
    then "$'" + builtins.replaceStrings ([ "\\" "'" ] ++ controlChars) ([ "\\\\" "\\'" ] ++ controlEscapes) str + "'"
    else "'" + builtins.replaceStrings [ "'" ] [ "'\\''" ] str + "'";

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
    arguments. `plan`: the JSON plan (a path; it is copied to the store). `tools`: dotted
    attribute paths in `pkgs` whose `bin` the commands forge runs for a service get first on
    PATH (`FORGE_DEV_PATH`; `forge test`, `forge e2e`, `forge dev`).

    # Type
    ```
    mkForgeApp :: { pkgs, runtime, name, description, args, plan, tools ? [ ] } -> App
    ```

    # Examples
    ```nix
    (mkForgeApp { pkgs = { writeShellApplication = a: { outPath = "out-${a.name}"; }; }; runtime = "forge"; name = "deploy:api"; description = "Deploy api"; args = [ "deploy" "api:staging" ]; plan = "plan.json"; }).meta.description
    => "Deploy api"
    ```
  */
  mkForgeApp = { pkgs, runtime, name, description, args, plan, tools ? [ ] }:
    let
      # The development tools reach only the commands forge runs for the service (FORGE_DEV_PATH
      # goes first on their PATH), not forge's own interpreter.
      devPath = builtins.concatStringsSep ":" (map (t: "${getPackage pkgs t}/bin") tools);
      prefix = if tools == [ ] then "" else "FORGE_DEV_PATH=${escapeShellArg devPath} ";
    in
    mkApp {
      inherit pkgs name description;
      runtimeInputs = [ runtime ];
      text = "${prefix}exec forge ${escapeShellArgs args} --plan ${escapeShellArg "${plan}"} \"$@\"";
    };

  /**
    A development app (`test:S`, `lint:S`, `fmt:S`, `fmt-check:S`): runs `command` in the
    service's directory (relative to where `nix run` is called: the repository root), with the
    service type's tools on PATH. A `null` command makes an app that explains how to set one.
    The command is data, not script text: the app runs `bash -c COMMAND' "$@"'`, so it means
    what it means at a prompt (`pytest $PYTEST_ARGS` splits the variable) and the app's own
    script passes ShellCheck whatever the command holds.

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
          exec "$BASH" -c ${escapeShellArg "${command} \"$@\""} ${escapeShellArg name} "$@"
        '';
    };

  /**
    The names of a service's apps, in the contract's order: `build:S`, `push:S`, `deploy:S`
    (first environment), `deploy:S:E`, `rollout:S:E`, `rollback:S:E`, `reconcile:S:E`, `migrate:S:E` per environment,
    `status:S`, `release:S`, `prerelease:S`, `comprehensive-release:S`, the development apps `test:S`,
    `lint:S`, `fmt:S`, `fmt-check:S`, the test levels `test:S:unit`, `test:S:integration`, `test:S:e2e`,
    `e2e-prepare:S`, `e2e-run:S`, and the local infrastructure's `dev-up:S`, `dev-down:S`.

    # Inputs
    `name`: the service. `environments`: its environments, in promotion order.

    # Type
    ```
    serviceAppNames :: String -> [String] -> [String]
    ```

    # Examples
    ```nix
    serviceAppNames "api" [ "prod" ]
    => [ "build:api" "push:api" "deploy:api" "deploy:api:prod" "rollout:api:prod" "rollback:api:prod" "reconcile:api:prod" "migrate:api:prod" "status:api" "release:api" "prerelease:api" "comprehensive-release:api" "test:api" "lint:api" "fmt:api" "fmt-check:api" "test:api:unit" "test:api:integration" "test:api:e2e" "e2e-prepare:api" "e2e-run:api" "dev-up:api" "dev-down:api" ]
    ```
  */
  serviceAppNames = name: environments:
    [ "build:${name}" "push:${name}" ]
    ++ (if environments == [ ] then [ ] else [ "deploy:${name}" ])
    ++ builtins.concatMap (e: [ "deploy:${name}:${e}" "rollout:${name}:${e}" "rollback:${name}:${e}" "reconcile:${name}:${e}" "migrate:${name}:${e}" ]) environments
    ++ [ "status:${name}" "release:${name}" "prerelease:${name}" "comprehensive-release:${name}" ]
    ++ [ "test:${name}" "lint:${name}" "fmt:${name}" "fmt-check:${name}" ]
    ++ [ "test:${name}:unit" "test:${name}:integration" "test:${name}:e2e" "e2e-prepare:${name}" "e2e-run:${name}" "dev-up:${name}" "dev-down:${name}" ];

  /**
    Validate a service attrset (what `loadService` reads from `nix/forge/plans/<name>.json`),
    reporting every problem at once through `forge.lib.errorReporter`; returns the service
    unchanged when valid. Catches hand edits and plans from an incompatible forgegen before they
    reach an app.

    # Inputs
    `file`: where the service came from (for the message). `service`: the attrset.

    # Type
    ```
    validateService :: String -> AttrSet -> AttrSet
    ```

    # Examples
    ```nix
    (validateService "api.nix" { name = "api"; type = "go"; path = "."; environments = [ ]; image = { architectures = [ "x86_64-linux" ]; package = "api-image"; repository = "r/api"; }; workload = { }; plan = "p.json"; registry = "r"; dev = { test = null; lint = null; fmt = null; fmt-check = null; }; tools = [ ]; }).name
    => "api"
    ```
  */
  validateService = file: service:
    let
      r = lib.errorReporter;
      str = path: value: r.checkType path "string" value;
    in
    r.validate "${fn "validateService"} (${file}; run forgegen sync to regenerate it)" [
      (v: r.checkAttrs {
        value = v;
        required = [ "name" "type" "path" "image" "environments" "workload" "plan" "registry" "dev" "tools" ];
      })
      (v: str [ "name" ] (v.name or ""))
      (v: r.checkOneOf [ "type" ] [ "rust" "python" "go" "node" "generic" ] (v.type or "generic"))
      (v: str [ "path" ] (v.path or ""))
      (v: str [ "registry" ] (v.registry or ""))
      (v: r.checkType [ "environments" ] "list" (v.environments or [ ]))
      (v: r.checkType [ "tools" ] "list" (v.tools or [ ]))
      (v: r.checkType [ "plan" ] [ "path" "string" ] (v.plan or ""))
      (v: r.checkAttrs {
        path = [ "image" ];
        value = v.image or { };
        required = [ "architectures" "package" "repository" ];
      })
      (v: r.checkAttrs {
        path = [ "dev" ];
        value = v.dev or { };
        required = [ "test" "lint" "fmt" "fmt-check" ];
      })
      (v: builtins.concatMap (verb: r.checkType [ "dev" verb ] [ "string" "null" ] ((v.dev or { }).${verb} or null))
        [ "test" "lint" "fmt" "fmt-check" ])
    ]
      service;

  /**
    The table entries of a service's apps (what each runs, and its description), from the
    service attrset `forgegen sync` writes (`nix/forge/services/<name>.nix`).

    # Inputs
    `service`: `{ name; type; path; environments; image.architectures; registry; dev; tools; }`,
    where `dev` maps `lint`, `fmt`, `fmt-check` to a shell command or `null` (`test:S` and the test
    levels are `forge test`, which reads the rest of `dev` from the plan).

    # Type
    ```
    serviceAppEntries :: AttrSet -> AttrSet
    ```

    # Examples
    ```nix
    (serviceAppEntries { name = "api"; type = "go"; path = "."; environments = [ "prod" ]; image.architectures = [ "x86_64-linux" ]; registry = "ghcr.io"; tools = [ "go" ]; dev = { test = "go test ./..."; lint = null; fmt = null; fmt-check = null; }; })."deploy:api"
    => { args = [ "deploy" "api:prod" ]; description = "Deploy api to prod (build, push, GitOps commit, Flux, rollout)"; kind = "forge"; }
    ```
  */
  serviceAppEntries = service:
    let
      n = service.name;
      envs = service.environments;
      forgeEntry = description: args: { kind = "forge"; inherit description args; };
      deployEntry = env: forgeEntry "Deploy ${n} to ${env} (build, push, GitOps commit, Flux, rollout)" [ "deploy" "${n}:${env}" ];
      devPhrases = { test = "Run the tests of"; lint = "Lint"; fmt = "Format the code of"; fmt-check = "Check the formatting of"; };
      devEntry = verb: {
        name = "${verb}:${n}";
        value = {
          kind = "dev";
          description = "${devPhrases.${verb}} ${n} (${service.type})";
          command = service.dev.${verb};
          inherit (service) path tools;
          setting = "services.${n}.dev.${verb}";
        };
      };
      perEnv = env: [
        { name = "deploy:${n}:${env}"; value = deployEntry env; }
        { name = "rollout:${n}:${env}"; value = forgeEntry "Watch the rollout of ${n} in ${env}" [ "rollout" "${n}:${env}" ]; }
        { name = "rollback:${n}:${env}"; value = forgeEntry "Roll ${n} in ${env} back to its previous image" [ "rollback" "${n}:${env}" ]; }
        { name = "reconcile:${n}:${env}"; value = forgeEntry "Reconcile Flux for ${n} in ${env} to the GitOps head" [ "reconcile" "${n}:${env}" ]; }
        { name = "migrate:${n}:${env}"; value = forgeEntry "Run the migrations of ${n} in ${env} (Kubernetes Jobs)" [ "migrate" "${n}:${env}" ]; }
      ];
      through = if envs == [ ] then "no environment" else builtins.concatStringsSep " then " envs;
      first = if envs == [ ] then "no environment" else builtins.head envs;
    in
    builtins.listToAttrs (
      [
        { name = "build:${n}"; value = forgeEntry "Build the ${n} image with Nix (${builtins.concatStringsSep ", " service.image.architectures})" [ "build" n ]; }
        { name = "push:${n}"; value = forgeEntry "Build and push the ${n} image to ${service.registry}" [ "push" n ]; }
        { name = "status:${n}"; value = forgeEntry "Show what runs where for ${n}" [ "status" n ]; }
        { name = "release:${n}"; value = forgeEntry "Release ${n} through ${through}" [ "release" n ]; }
        { name = "prerelease:${n}"; value = forgeEntry "Prerelease ${n}: build, test, push, deploy to ${first} and verify; report what is ready to promote" [ "release" "--stage" "pre" n ]; }
        { name = "comprehensive-release:${n}"; value = forgeEntry "Build, test and push ${n}, then release it through ${through} with its e2e tests run against ${first} before promotion" [ "release" "--stage" "comprehensive" n ]; }
      ]
      ++ (if envs == [ ] then [ ] else [ { name = "deploy:${n}"; value = deployEntry (builtins.head envs); } ])
      ++ builtins.concatMap perEnv envs
      ++ map devEntry [ "lint" "fmt" "fmt-check" ]
      ++ map (e: { name = e.name; value = { kind = "forge"; inherit (e) description args; inherit (service) tools; }; }) [
        { name = "test:${n}"; args = [ "test" n ]; description = "Run the tests of ${n} (${service.type}): unit, integration, e2e; stop at the first failing level"; }
        { name = "test:${n}:unit"; args = [ "test" "${n}:unit" ]; description = "Run the unit tests of ${n}"; }
        { name = "test:${n}:integration"; args = [ "test" "${n}:integration" ]; description = "Run the integration tests of ${n} with its local infrastructure (throwaway PostgreSQL)"; }
        { name = "test:${n}:e2e"; args = [ "test" "${n}:e2e" ]; description = "Run the end-to-end tests of ${n} against it started locally (prepare, run, tear down)"; }
        { name = "e2e-prepare:${n}"; args = [ "e2e" "prepare" n ]; description = "Start ${n} locally with its infrastructure and wait until it is healthy"; }
        { name = "e2e-run:${n}"; args = [ "e2e" "run" n ]; description = "Run the end-to-end tests of ${n} against what e2e-prepare:${n} started"; }
        { name = "dev-up:${n}"; args = [ "dev" "up" n ]; description = "Start the local infrastructure of ${n} (.forge/dev/${n}.env)"; }
        { name = "dev-down:${n}"; args = [ "dev" "down" n ]; description = "Stop the local infrastructure of ${n} and what e2e-prepare:${n} started"; }
      ]
    );

  /**
    The code-generation apps of a service: `extract-schema:S` (fetch the GraphQL SDL from the
    running service into the file it declares), `codegen:S` (run its generator command) and
    `update-cargo-nix:S` (regenerate `Cargo.nix` with crate2nix). Every service has them, so
    listing them reads no plan; the runtime says what to configure, or (update-cargo-nix) that
    the service's build needs no `Cargo.nix`.

    # Inputs
    `name`: the service.

    # Type
    ```
    codegenAppEntries :: String -> AttrSet
    ```

    # Examples
    ```nix
    builtins.attrNames (codegenAppEntries "api")
    => [ "codegen:api" "extract-schema:api" "update-cargo-nix:api" ]

    (codegenAppEntries "web")."codegen:web".args
    => [ "codegen" "web" ]
    ```
  */
  codegenAppEntries = n:
    let entry = description: args: { kind = "forge"; inherit description args; }; in
    {
      "extract-schema:${n}" = entry "Fetch the GraphQL schema (SDL) of the running ${n} into its declared file" [ "extract-schema" n ];
      "codegen:${n}" = entry "Run the GraphQL code generator of ${n} (types, hooks)" [ "codegen" n ];
      "update-cargo-nix:${n}" = entry "Regenerate Cargo.nix of ${n} with crate2nix (Rust services whose build uses one)" [ "update-cargo-nix" n ];
    };

  /**
    The table entries of the product-wide apps: `release`, `prerelease`, `comprehensive-release`, `status`, `reconcile:E` per environment,
    `forge:sync`, `codegen`, `codegen-sync`, and the development loop's `test`, `dev-up`, `dev-down`, `dev-status`.

    # Inputs
    `project`: the project name. `environments`: all environments, in promotion order. `tools`:
    the development tools of every service (put on PATH for `test` and the `dev-*` apps).

    # Type
    ```
    projectAppEntries :: { project, environments, tools ? [ ] } -> AttrSet
    ```

    # Examples
    ```nix
    (projectAppEntries { project = "shop"; environments = [ "staging" "production" ]; }).release.description
    => "Release every service of shop through staging then production"
    ```
  */
  projectAppEntries = { project, environments, tools ? [ ] }: builtins.listToAttrs (map
    (e: { name = "reconcile:${e}"; value = { kind = "forge"; args = [ "reconcile" e ]; description = "Reconcile Flux in ${e} to the GitOps head (every service of ${project} there)"; }; })
    environments) // {
    release = { kind = "forge"; args = [ "release" ]; description = "Release every service of ${project} through ${builtins.concatStringsSep " then " environments}"; };
    prerelease = { kind = "forge"; args = [ "release" "--stage" "pre" ]; description = "Prerelease every service of ${project}: build, test, push, deploy to ${if environments == [ ] then "no environment" else builtins.head environments} and verify; report what is ready to promote"; };
    comprehensive-release = { kind = "forge"; args = [ "release" "--stage" "comprehensive" ]; description = "Build, test and push every service of ${project}, then release through ${builtins.concatStringsSep " then " environments} with e2e tests run against the first environment before promotion"; };
    status = { kind = "forge"; args = [ "status" ]; description = "Show what runs where for every service of ${project}"; };
    "forge:sync" = { kind = "generator"; args = [ "sync" ]; description = "Regenerate nix/forge from deploy.yaml (forgegen sync)"; };
    test = { kind = "forge"; args = [ "test" ]; inherit tools; description = "Run the tests of every service of ${project} (each one's unit, integration, e2e)"; };
    dev-up = { kind = "forge"; args = [ "dev" "up" ]; inherit tools; description = "Start the local infrastructure of every service of ${project}"; };
    dev-down = { kind = "forge"; args = [ "dev" "down" ]; inherit tools; description = "Stop the local infrastructure of every service of ${project}"; };
    dev-status = { kind = "forge"; args = [ "dev" "status" ]; inherit tools; description = "Show the local infrastructure and test runs of ${project} (.forge/dev)"; };
    codegen = { kind = "forge"; args = [ "codegen" ]; description = "Run the GraphQL code generator of every service of ${project} that declares one"; };
    codegen-sync = { kind = "forge"; args = [ "codegen-sync" ]; description = "Extract every declared GraphQL schema, then run every code generator of ${project} (--check: fail if the committed files are out of date)"; };
  };

  # A file (a path) copied alone to the store under its own name with the characters a store
  # path may not hold replaced by `_` (a store path name is [A-Za-z0-9+._?=-]); a string (already
  # a store path) as it is.
  storeFile = file:
    if builtins.isPath file && !builtins.pathExists file then
      throw "${fn "provisionAppEntries"}: the provisioning file ${toString file} does not exist; create it or fix deploy.yaml's provision (paths are relative to deploy.yaml), then run forgegen sync; in a flake, `git add` it (flakes see only files git tracks)"
    else if builtins.isPath file then
      builtins.path {
        path = file;
        name = "provision-" + builtins.concatStringsSep "" (map (part: if builtins.isList part then "_" else part)
          (builtins.split "[^A-Za-z0-9+._?=-]" (baseNameOf file)));
      }
    else toString file;

  /**
    The table entries of the provisioning apps: `provision:postgres` and `provision:attic`, one per
    kind with files (deploy.yaml's `provision`). Each runs `forge-provision <kind> provision -c FILE`
    for every file in order, with the user's arguments appended (`-- --dry-run --json`).

    # Inputs
    `provision`: kind (`postgres`, `attic`) → list of config files (paths or store path strings).

    # Type
    ```
    provisionAppEntries :: { postgres ? [Path], attic ? [Path] } -> AttrSet
    ```

    # Examples
    ```nix
    builtins.attrNames (provisionAppEntries { postgres = [ "db.yaml" ]; attic = [ ]; })
    => [ "provision:postgres" ]

    (provisionAppEntries { attic = [ "a.yaml" "b.yaml" ]; })."provision:attic".files
    => [ "a.yaml" "b.yaml" ]
    ```
  */
  provisionAppEntries = provision: builtins.listToAttrs (map
    (what: {
      name = "provision:${what}";
      value = {
        kind = "provision"; inherit what; files = provision.${what};
        description = "Provision ${if what == "postgres" then "PostgreSQL" else "Attic"} from ${builtins.concatStringsSep ", " (map baseNameOf provision.${what})} (forge-provision ${what} provision; --dry-run: only report)";
      };
    })
    (builtins.filter (what: (provision.${what} or [ ]) != [ ]) [ "postgres" "attic" ]));

  /**
    One app from its table entry (`kind` = `"forge"`, `"dev"`, `"generator"` or `"provision"`).

    # Inputs
    `name`: the app name. `entry`: its table entry. `plan`: the JSON plan for `forge` apps.

    # Type
    ```
    mkTableApp :: { pkgs, runtime, name, entry, plan } -> App
    ```

    # Examples
    ```nix
    (mkTableApp { pkgs = { writeShellApplication = a: { outPath = "out-${a.name}"; }; }; runtime = "forge"; name = "status"; plan = "p.json"; entry = { kind = "forge"; description = "Status"; args = [ "status" ]; }; }).meta.description
    => "Status"
    ```
  */
  mkTableApp = { pkgs, runtime, name, entry, plan }:
    if entry.kind == "forge" then
      mkForgeApp { inherit pkgs runtime name plan; inherit (entry) description args; tools = entry.tools or [ ]; }
    else if entry.kind == "dev" then
      mkDevApp { inherit pkgs name; inherit (entry) description command path tools setting; }
    else if entry.kind == "generator" then
      mkApp {
        inherit pkgs name; inherit (entry) description;
        runtimeInputs = [ runtime ];
        text = "exec forgegen ${escapeShellArgs entry.args} \"$@\"";
      }
    else if entry.kind == "provision" then
      mkApp {
        inherit pkgs name; inherit (entry) description;
        runtimeInputs = [ runtime ];
        text = builtins.concatStringsSep "\n"
          (map (file: "forge-provision ${escapeShellArgs [ entry.what "provision" "--config" (storeFile file) ]} \"$@\"") entry.files);
      }
    else throw "${fn "mkTableApp"}: app ${builtins.toJSON name} has unknown kind ${builtins.toJSON entry.kind}; expected \"forge\", \"dev\", \"generator\" or \"provision\"";

  /**
    A service as the apps need it, read from its JSON plan fragment (`nix/forge/plans/<name>.json`,
    written by `forgegen sync`) and validated with `validateService`.

    # Inputs
    `plan`: the fragment (a path). `registry`: the registry host (from the project plan).

    # Type
    ```
    loadService :: { plan :: Path, registry :: String } -> AttrSet
    ```

    # Examples
    ```nix
    (loadService { registry = "ghcr.io"; plan = builtins.toFile "api.json" (builtins.toJSON { services = [ { name = "api"; type = "go"; path = "."; image = { architectures = [ "x86_64-linux" ]; package = "api-image"; repository = "ghcr.io/api"; }; workload = { }; targets = [ { environment = "prod"; } ]; dev = { test = null; lint = null; fmt = null; fmt-check = null; tools = [ ]; }; } ]; }); }).environments
    => [ "prod" ]
    ```
  */
  loadService = { plan, registry }:
    let
      doc = builtins.fromJSON (builtins.readFile plan);
      s = builtins.head (doc.services or [ { } ]);
      dev = s.dev or { };
    in
    validateService (toString plan) {
      inherit plan registry;
      name = s.name or null;
      type = s.type or null;
      path = s.path or null;
      image = s.image or { };
      workload = s.workload or { };
      environments = map (t: t.environment) (s.targets or [ ]);
      dev = builtins.removeAttrs dev [ "tools" ];
      tools = dev.tools or [ ];
    };

  /**
    Everything `nix/forge/default.nix` exposes: `apps` (every app of the project) and `services`.
    App names come from the small index (service → environments), so listing them reads no plan;
    each app's value reads only its own service's plan. That keeps evaluating one app of a
    500-service project close to the cost of a 1-service one.

    # Inputs
    `index`: service name → `{ plan; environments; }`. `project`, `environments`: for the
    product-wide apps. `order`: the services in deploy.yaml's order. `projectPlan`: the
    product-wide settings (`plans/_project.json`). `runtime`: the package with the `forge`,
    `forgegen` and `forge-provision` commands. `provision`: deploy.yaml's provisioning files
    (`provisionAppEntries`).

    # Type
    ```
    mkProject :: { pkgs, runtime, index, project, environments, order, projectPlan, provision ? { } } -> { apps, services, plans, project }
    ```

    # Examples
    ```nix
    builtins.attrNames (mkProject { pkgs = { writeShellApplication = a: { outPath = "out-${a.name}"; }; }; runtime = "forge"; index = { }; project = "p"; environments = [ "prod" ]; order = [ ]; projectPlan = builtins.toFile "p.json" "{\"registry\": {\"host\": \"r\"}, \"services\": []}"; }).apps
    => [ "codegen" "codegen-sync" "comprehensive-release" "dev-down" "dev-status" "dev-up" "forge:sync" "prerelease" "reconcile:prod" "release" "status" "test" ]
    ```
  */
  mkProject = { pkgs, runtime, index, project, environments, order, projectPlan, provision ? { } }:
    let
      registry = (builtins.fromJSON (builtins.readFile projectPlan)).registry.host;
      services = builtins.mapAttrs (name: spec: loadService { inherit (spec) plan; inherit registry; }) index;
      planFor = name: mergePlans { name = "forge-plan-${name}.json"; base = projectPlan; plans = [ index.${name}.plan ]; };
      serviceApps = builtins.concatMap
        (name:
          map
            (app: {
              name = app;
              value =
                let entries = serviceAppEntries services.${name}; in
                if entries ? ${app} then
                  mkTableApp { inherit pkgs runtime; name = app; entry = entries.${app}; plan = planFor name; }
                else throw "${fn "mkProject"}: the plan of ${name} has no app ${builtins.toJSON app}; run forgegen sync";
            })
            (serviceAppNames name index.${name}.environments))
        (builtins.attrNames index);
      codegenApps = builtins.concatMap
        (name:
          let entries = codegenAppEntries name; in
          map (app: { name = app; value = mkTableApp { inherit pkgs runtime; name = app; entry = entries.${app}; plan = planFor name; }; })
            (builtins.attrNames entries))
        (builtins.attrNames index);
      wholePlan = mergePlans { name = "forge-plan-${project}.json"; base = projectPlan; plans = map (n: index.${n}.plan) order; };
    in
    {
      inherit project services;
      # The complete plan each app passes to forge (built on demand in the store).
      plans = builtins.mapAttrs (name: _: planFor name) index // { "" = wholePlan; };
      apps = builtins.listToAttrs serviceApps // builtins.listToAttrs codegenApps
        // builtins.mapAttrs (name: entry: mkTableApp { inherit pkgs runtime name entry; plan = wholePlan; })
          (projectAppEntries { inherit project environments; tools = unique (builtins.concatMap (n: services.${n}.tools) order); })
        // builtins.mapAttrs (name: entry: mkTableApp { inherit pkgs runtime name entry; plan = wholePlan; })
          (provisionAppEntries provision);
    };

  /**
    A JSON plan file made of `base` with the `services` of every plan in `plans` appended, in
    order. The plan files are not re-encoded (Nix would print floats with 6 significant digits):
    the result names them by store path (`base`, `parts`) and the Forge runtime (`load_plan`)
    reads each one as `forgegen sync` wrote it. Lazy: nothing is read until the result is used.

    # Inputs
    `name`: the store file's name. `base`: a plan file, or the plan as an attrset (its
    `services` are kept first; numbers in an attrset are written as Nix prints them).
    `plans`: plan files whose services are appended.

    # Type
    ```
    mergePlans :: { name, base :: Path | AttrSet, plans :: [Path] } -> StorePath
    ```

    # Examples
    ```nix
    builtins.match ".*-p[.]json" (mergePlans { name = "p.json"; base = { services = [ ]; }; plans = [ ]; }) != null
    => true
    ```
  */
  mergePlans = { name, base, plans }:
    let
      baseFile = if builtins.isAttrs base then builtins.toFile "base-${name}" (builtins.toJSON base) else base;
    in
    builtins.toFile name (builtins.toJSON {
      generator = "forgegen";
      base = "${baseFile}";
      parts = map (p: "${p}") plans;
    });
in
{
  inherit escapeShellArg escapeShellArgs getPackage mkApp mkForgeApp mkDevApp serviceAppNames validateService loadService serviceAppEntries codegenAppEntries projectAppEntries provisionAppEntries mkTableApp mkProject mergePlans;
}
