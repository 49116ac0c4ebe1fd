/**
  forge.lib: the pure Nix library of Forge.

  Uses `builtins` only, so it evaluates with no inputs at all; functions that need packages take
  `pkgs` as an argument. One file per sub-library, named after its attribute. See lib/README.md.
*/
let
  lib = {
    apps = import ./apps.nix { inherit lib; };
    attic = import ./attic.nix { inherit lib; };
    errorReporter = import ./errorReporter.nix { inherit lib; };
    errors = import ./errors.nix { inherit lib; };
    flakeInputs = import ./flakeInputs.nix { inherit lib; };
    performance = import ./performance.nix { inherit lib; };
    platform = import ./platform.nix { inherit lib; };
    sources = import ./sources.nix { inherit lib; };
  };
in
lib
