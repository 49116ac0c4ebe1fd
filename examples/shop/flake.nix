{
  description = "shop: an example consumer of Forge (two services, two environments)";

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
      packages = forAllSystems (system:
        let
          pkgs = nixpkgs.legacyPackages.${system};
          service = name: pkgs.writeShellApplication {
            inherit name;
            text = builtins.readFile (./services + "/${name}/main.sh");
          };
        in
        {
          api = service "api";
          web = service "web";
          api-image = pkgs.dockerTools.buildLayeredImage {
            name = "api";
            contents = [ self.packages.${system}.api ];
            config.Cmd = [ "/bin/api" ];
          };
          web-image = pkgs.dockerTools.buildLayeredImage {
            name = "web";
            contents = [ self.packages.${system}.web ];
            config.Cmd = [ "/bin/web" ];
          };
        });

      # Everything Forge generated from deploy.yaml: deploy:api, release, status, test:web, ...
      apps = forAllSystems (system:
        (import ./nix/forge { inherit forge system; pkgs = nixpkgs.legacyPackages.${system}; }).apps);
    };
}
