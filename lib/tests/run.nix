/**
  Evaluate every forge.lib test case: `{ total; failures; }`, where each failure is
  `{ name; expected; result; }`. A case is `{ expr; expected; }` (nixpkgs `lib/tests/misc.nix`
  style); the case files are listed in ./cases.nix.
*/
{
  lib ? import ../.,
  # More cases to run alongside the suite (tests/test_lib.py adds a failing one to check the
  # failure report).
  extraCases ? { },
}:
let
  cases = import ./cases.nix { inherit lib; } // extraCases;
  names = builtins.attrNames cases;
in
{
  total = builtins.length names;
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
}
