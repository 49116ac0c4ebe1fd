{
  # A STAND-IN for nixpkgs, for Forge's offline tests only (the real nixpkgs cannot be fetched
  # on the test machines). It provides just the attributes Forge's root flake, the generated Nix
  # and the example consumer use, built from raw `derivation`s and host tools (the Nix sandbox is
  # off on these machines). The generated Nix itself is written for the real nixpkgs; tests pass
  # `--override-input nixpkgs path:<checkout>/tests/nixpkgs-standin`.
  description = "nixpkgs stand-in for Forge's offline tests (not nixpkgs)";

  outputs = { self }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
    in
    {
      legacyPackages = builtins.listToAttrs (map
        (system: { name = system; value = import ./pkgs.nix { inherit system; }; })
        systems);
    };
}
