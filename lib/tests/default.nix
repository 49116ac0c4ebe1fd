/**
  The failing forge.lib test cases: `[ ]` when every case passes.

    nix-instantiate --eval --strict --json lib/tests/default.nix

  Each failure is `{ name; expected; result; }`. `./run.nix` also gives the number of cases;
  `./check.nix` wraps the run in a derivation for a flake's `checks`.
*/
(import ./run.nix { }).failures
