/**
  The forge.lib test suite as a flake check:

    checks.<system>.lib-tests = import ./lib/tests/check.nix { inherit system; };

  Succeeds only when every `{ expr; expected; }` case passes (the cases are evaluated when the
  check is instantiated; the derivation reports them). It also builds `closureSizeCheck` and
  `flakeInputs.check` on inputs where they must pass, so `nix flake check` runs the check
  builders for real. Their failing paths cannot be exercised from inside a build; tests/test_lib.py
  builds those and pins their messages.

  `pkgs` defaults to ./pkgs-shim.nix (host /bin/sh and coreutils, which needs `sandbox = false`);
  pass real nixpkgs (`nixpkgs.legacyPackages.${system}`) where it is available.
*/
{
  system,
  pkgs ? null,
  extraCases ? { },
}:
let
  lib = import ../.;
  run = import ./run.nix { inherit lib extraCases; };
  p = if pkgs == null then import ./pkgs-shim.nix { inherit system; } else pkgs;

  payload = p.writeText "forge-lib-tests-payload" "forge.lib closure-size payload\n";
  closureWithinBudget = lib.performance.closureSizeCheck {
    pkgs = p;
    drv = payload;
    maxBytes = "1 MiB";
  };
  inputsClean = lib.flakeInputs.check {
    pkgs = p;
    lock = ./fixtures/duplicate-nixpkgs.lock.json;
    ignore = [ "tool/nixpkgs" ];
    name = "forge-lib-tests-flake-inputs";
  };

  failureLines = map (
    f: "  ${f.name}: expected ${lib.errors.show f.expected}, got ${lib.errors.show f.result}"
  ) run.failures;
  report =
    if run.failures == [ ] then
      "forge.lib: all ${toString run.total} cases pass"
    else
      builtins.concatStringsSep "\n" (
        [ "forge.lib: ${toString (builtins.length run.failures)} of ${toString run.total} cases fail:" ]
        ++ failureLines
        ++ [ "run: nix-instantiate --eval --strict --json lib/tests/default.nix" ]
      );
in
p.runCommand "forge-lib-tests" {
  inherit report closureWithinBudget inputsClean;
  failed = run.failures != [ ];
} ''
  if [ -n "$failed" ]; then
    printf '%s\n' "$report" >&2
    exit 1
  fi
  {
    printf '%s\n' "$report"
    cat "$closureWithinBudget"
    cat "$inputsClean"
  } > "$out"
''
