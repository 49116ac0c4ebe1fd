{
  description = "starter: services deployed with Forge";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    # Forge's flake; pin a release with a ref (github:forge-deploy/forge/v0.1.0) or by flake.lock.
    forge.url = "github:forge-deploy/forge";
    forge.inputs.nixpkgs.follows = "nixpkgs";
  };

  outputs = { self, nixpkgs, forge }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: builtins.listToAttrs (map (system: { name = system; value = f system; }) systems);
    in
    {
      packages = forAllSystems (system:
        let pkgs = nixpkgs.legacyPackages.${system}; in {
          # One image per service in deploy.yaml, named after services.<name>.image.package:
          api-image = pkgs.dockerTools.buildLayeredImage {
            name = "api";
            contents = [ pkgs.hello ];
            config.Cmd = [ "hello" ];
          };
          # forgegen add-service: new packages go above this line
        });

      # The apps generated from deploy.yaml: nix run .#deploy:api, .#release, .#status, ...
      apps = forAllSystems (system:
        (import ./nix/forge { inherit forge system; pkgs = nixpkgs.legacyPackages.${system}; }).apps);
    };
}
