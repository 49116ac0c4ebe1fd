{
  description = "shop: an example consumer of Forge (four services, two environments)";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    forge.url = "github:forge-deploy/forge";
    forge.inputs.nixpkgs.follows = "nixpkgs";
  };

  outputs = { self, nixpkgs, forge }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: builtins.listToAttrs (map (system: { name = system; value = f system; }) systems);
    in
    {
      # One package and one image per service (`forgegen add-service` adds both above the marker).
      packages = forAllSystems (system:
        let pkgs = nixpkgs.legacyPackages.${system}; in {
          api = pkgs.python3Packages.buildPythonApplication {
            pname = "api";
            version = "0.1.0";
            src = (./. + "/services/api");
            pyproject = true;
            build-system = [ pkgs.python3Packages.setuptools ];
          };
          api-image = pkgs.dockerTools.buildLayeredImage {
            name = "api";
            contents = [ self.packages.${system}.api ];
            config.Cmd = [ "/bin/api" ];
          };
          web = pkgs.writeShellApplication {
            name = "web";
            runtimeInputs = [ pkgs.nodejs ];
            text = ''exec node ${(./. + "/services/web")}/src/server.js "$@"'';
          };
          web-image = pkgs.dockerTools.buildLayeredImage {
            name = "web";
            contents = [ self.packages.${system}.web ];
            config.Cmd = [ "/bin/web" ];
          };
          inventory = pkgs.rustPlatform.buildRustPackage {
            pname = "inventory";
            version = "0.1.0";
            src = (./. + "/services/inventory");
            cargoLock.lockFile = (./. + "/services/inventory" + "/Cargo.lock");
          };
          inventory-image = pkgs.dockerTools.buildLayeredImage {
            name = "inventory";
            contents = [ self.packages.${system}.inventory ];
            config.Cmd = [ "/bin/inventory" ];
          };
          mailer = pkgs.buildGoModule {
            pname = "mailer";
            version = "0.1.0";
            src = (./. + "/services/mailer");
            vendorHash = null; # standard library only
          };
          mailer-image = pkgs.dockerTools.buildLayeredImage {
            name = "mailer";
            contents = [ self.packages.${system}.mailer ];
            config.Cmd = [ "/bin/mailer" ];
          };
          # forgegen add-service: new packages go above this line
        });

      # Everything Forge generated from deploy.yaml: deploy:api, release, status, test:web, ...
      apps = forAllSystems (system:
        (import ./nix/forge { inherit forge system; pkgs = nixpkgs.legacyPackages.${system}; }).apps);
    };
}
