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
            dependencies = [ py.click py.jinja2 py.pydantic py.pyyaml py.rich py.kubernetes py.urllib3 py.psycopg ];
            meta.description = "forgegen, forge and forge-provision: Forge's generator and runtime";
            meta.mainProgram = "forge";
          };
          forge-provision = pkgs.runCommand "forge-provision-${version}"
            {
              meta.mainProgram = "forge-provision";
              meta.description = "PostgreSQL and Attic provisioning from YAML, with a plan";
            } ''
            mkdir -p $out/bin
            ln -s ${forgegen}/bin/forge-provision $out/bin/forge-provision
          '';
        in
        {
          inherit forgegen forge-provision;
          default = forgegen;
          # nix and what a builder needs (nix/builder-image.nix); apps nix-builder:verify / :release.
          nix-builder-image = import ./nix/builder-image.nix { inherit pkgs version; };
          # For in-cluster Jobs (examples/provision/job.yaml): runs as nobody, HOME in /tmp.
          forge-provision-image = pkgs.dockerTools.buildLayeredImage {
            name = "forge-provision";
            tag = version;
            contents = [ pkgs.cacert ];
            extraCommands = "mkdir -m 1777 tmp";
            config = {
              Entrypoint = [ "${forge-provision}/bin/forge-provision" ];
              User = "65534:65534";
              Env = [ "HOME=/tmp" "XDG_CONFIG_HOME=/tmp/.config" "SSL_CERT_FILE=${pkgs.cacert}/etc/ssl/certs/ca-bundle.crt" ];
            };
          };
        });

      apps = forAllSystems (system:
        let
          pkg = self.packages.${system}.forgegen;
          app = name: description: { type = "app"; program = "${pkg}/bin/${name}"; meta.description = description; };
          builderApp = verb: description:
            let
              script = nixpkgs.legacyPackages.${system}.writeShellApplication {
                name = "nix-builder-${verb}";
                runtimeInputs = [ pkg ];
                text = ''exec forge builder-image ${verb} "$@"'';
              };
            in
            { type = "app"; program = "${script}/bin/nix-builder-${verb}"; meta.description = description; };
        in
        {
          forgegen = app "forgegen" "Generate flake apps from deploy.yaml (init, sync, check, schema)";
          forge = app "forge" "The Forge runtime: build, push, deploy, rollout, rollback, status, release";
          forge-provision = app "forge-provision" "Provision PostgreSQL databases and Attic caches from YAML";
          # The builder image (packages.nix-builder-image): forge builder-image verify / release.
          "nix-builder:verify" = builderApp "verify" "Build the Nix builder image; check nix evaluates and builds from its root filesystem";
          "nix-builder:release" = builderApp "release" "Push the Nix builder image under Forge's deterministic tags";
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
