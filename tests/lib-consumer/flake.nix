{
  description = "A consumer of forge.lib: uses every sub-library, evaluates in pure mode";

  # tests/test_lib.py copies this flake to a temp dir and passes
  # `--override-input forge path:<temp copy of forge.lib>`; this URL is only the default.
  inputs.forge.url = "path:../..";

  outputs =
    { self, forge }:
    let
      lib = forge.lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];

      # With real nixpkgs this is `nixpkgs.legacyPackages.${system}`. This consumer has no nixpkgs
      # input (it cannot be fetched where the tests run), so it brings the one builder forge.lib's
      # checks need, nixpkgs' `runCommand name env script`, made from a raw derivation.
      pkgsFor = system: rec {
        runCommand =
          name: env: script:
          derivation (
            {
              inherit name system;
              builder = "/bin/sh";
              args = [ "-euc" script ];
              PATH = "/usr/bin:/bin";
            }
            // env
          );
        writeText = name: text: runCommand name { inherit text; } ''printf '%s' "$text" > "$out"'';
      };

      cache = {
        endpoint = "https://attic.example.com/";
        cache = "main";
        publicKey = "main:6cOPPNt4YAWzp1Mau/LTxHxmtfk4vYcK2O0GWBsUf7g=";
      };

      # errorReporter: validate a service definition, reporting every problem at once.
      validateService = lib.errorReporter.validate "consumer.services.api" [
        (
          v:
          lib.errorReporter.checkAttrs {
            value = v;
            required = [ "name" "port" ];
            optional = [ "replicas" ];
          }
        )
        (v: lib.errorReporter.checkType [ "port" ] "int" (v.port or 0))
        (v: lib.errorReporter.warnIf ((v.replicas or 1) < 2) [ "replicas" ] "a single replica has no redundancy")
      ];
      service = validateService {
        name = "api";
        port = 8080;
        replicas = 2;
      };
      badService = {
        name = "api";
        port = "8080";
        prot = 1;
      };
    in
    lib.platform.eachSystem systems (
      system:
      let
        pkgs = pkgsFor system;
        payload = pkgs.writeText "consumer-payload" "a small closure\n";
      in
      {
        packages.payload = payload;
        checks = {
          closure-budget = lib.performance.closureSizeCheck {
            inherit pkgs;
            drv = payload;
            maxBytes = "1 MiB";
          };
          flake-inputs = lib.flakeInputs.check {
            inherit pkgs;
            lock = if builtins.pathExists ./flake.lock then ./flake.lock else { nodes.root = { }; };
          };
        };
        # Checks that must fail (the test builds them and reads their messages); a real
        # consumer would not have these.
        expectedFailures = {
          closure-over-budget = lib.performance.closureSizeCheck {
            inherit pkgs;
            drv = payload;
            maxBytes = 4;
          };
          other-project-inputs = lib.flakeInputs.check {
            inherit pkgs;
            lock = ./other-project.lock.json;
          };
        };
      }
    )
    // {
      nixosModules.attic = { ... }: { nix.settings = lib.attic.nixSettings cache; };

      # Everything the test compares, as JSON.
      summary = {
        platforms = lib.platform.forEachSystem systems lib.platform.toOciString;
        archTags = map lib.platform.ociArch systems;
        fromOci = lib.platform.fromOci "linux/arm64";
        linux = map lib.platform.isLinux systems;
        darwin = lib.platform.isDarwin "aarch64-darwin";
        nixConfig = lib.attic.nixConfig cache;
        nixSettings = self.nixosModules.attic { };
        substituter = lib.attic.substituter cache;
        service = service;
        badServiceProblems = lib.errorReporter.format "consumer.services.api" (
          builtins.concatMap (f: f badService) [
            (
              v:
              lib.errorReporter.checkAttrs {
                value = v;
                required = [ "name" "port" ];
                optional = [ "replicas" ];
              }
            )
            (v: lib.errorReporter.checkType [ "port" ] "int" (v.port or 0))
          ]
        );
        error = lib.errors.render {
          where = "consumer.deploy";
          kind = "unknown-environment";
          message = "no environment \"prod\"";
          context.environment = "prod";
          suggestions = [ "use \"production\"" ];
        };
        duplicateInputs = map (d: d.suggestion) (lib.flakeInputs.duplicates ./other-project.lock.json);
        budget = lib.performance.formatBytes (lib.performance.parseSize "1.5 GiB");
      };
    };
}
