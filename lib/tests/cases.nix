/**
  Every forge.lib test case, as one flat attribute set `"<file>.<case>" = { expr; expected; }`.
  One case file per sub-library; each takes `{ lib, fails }` where `fails x` is true when forcing
  `x` completely throws (via `throw` or `assert`).
*/
{ lib }:
let
  fails = x: !(builtins.tryEval (builtins.deepSeq x x)).success;
  files = [
    "attic"
    "errorReporter"
    "errors"
    "flakeInputs"
    "performance"
    "platform"
    "sources"
  ];
  load =
    file:
    let
      fileCases = import (./. + "/${file}.nix") { inherit lib fails; };
    in
    map (name: {
      name = "${file}.${name}";
      value = fileCases.${name};
    }) (builtins.attrNames fileCases);
in
builtins.listToAttrs (builtins.concatMap load files)
