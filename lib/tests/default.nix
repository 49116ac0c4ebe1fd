/**
  Run every forge.lib test case and return the failures: `[ ]` when all pass.

    nix-instantiate --eval --strict --json lib/tests/default.nix

  Each failure is `{ name; expected; result; }`. A case is `{ expr; expected; }` (nixpkgs
  `lib/tests/misc.nix` style); the case files are listed in ./cases.nix. With `--arg summary true`
  the result is `{ total; failures; }` instead, so callers can see how many cases ran.
*/
{
  lib ? import ../.,
  summary ? false,
}:
let
  cases = import ./cases.nix { inherit lib; };
  names = builtins.attrNames cases;
  failures = builtins.concatMap (
    name:
    let
      case = cases.${name};
    in
    if case.expr == case.expected then
      [ ]
    else
      [
        {
          inherit name;
          inherit (case) expected;
          result = case.expr;
        }
      ]
  ) names;
in
if summary then
  {
    total = builtins.length names;
    inherit failures;
  }
else
  failures
