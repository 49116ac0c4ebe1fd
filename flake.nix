{
  description = "Forge: deploy Nix-built services to Kubernetes through FluxCD GitOps";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      lib = import ./lib;
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: builtins.listToAttrs (map (system: { name = system; value = f system; }) systems);
      version = (builtins.fromTOML (builtins.readFile ./pyproject.toml)).project.version;
    in
    {
      # forge.lib: pure, system-independent (builtins only).
      inherit lib;

      packages = forAllSystems (system:
        let
          pkgs = nixpkgs.legacyPackages.${system};
          py = pkgs.python3Packages;
          forgegen = py.buildPythonApplication {
            pname = "forge-deploy";
            inherit version;
            pyproject = true;
            src = ./.;
            build-system = [ py.setuptools ];
            dependencies = [ py.click py.jinja2 py.pydantic py.pyyaml py.ruamel-yaml py.rich py.kubernetes py.psycopg ];
            meta.description = "forgegen, forge and forge-provision: Forge's generator and runtime";
            meta.mainProgram = "forge";
          };
        in
        {
          inherit forgegen;
          default = forgegen;
        });

      apps = forAllSystems (system:
        let
          pkg = self.packages.${system}.forgegen;
          app = name: description: { type = "app"; program = "${pkg}/bin/${name}"; meta.description = description; };
        in
        {
          forgegen = app "forgegen" "Generate flake apps from deploy.yaml (init, sync, check, schema)";
          forge = app "forge" "The Forge runtime: build, push, deploy, rollout, rollback, status, release";
          default = app "forgegen" "Generate flake apps from deploy.yaml (init, sync, check, schema)";
        });

      checks = forAllSystems (system: {
        lib-tests = import ./lib/tests/check.nix { inherit system; pkgs = nixpkgs.legacyPackages.${system}; };
      });

      templates.default = {
        path = ./examples/starter;
        description = "A project deployed with Forge: deploy.yaml, flake.nix and the generated nix/forge";
      };
    };
}
