# Cases for forge.lib.platform. Each is { expr; expected; }.
{ lib, fails }:
let
  p = lib.platform;
in
{
  supportedSystems-sorted = {
    expr = p.supportedSystems;
    expected = [ "aarch64-darwin" "aarch64-linux" "x86_64-darwin" "x86_64-linux" ];
  };
  knownSystems-cover-supported = {
    expr = builtins.all (s: builtins.elem s p.knownSystems) p.supportedSystems;
    expected = true;
  };
  knownSystems-all = {
    expr = p.knownSystems;
    expected = [
      "aarch64-darwin"
      "aarch64-linux"
      "armv6l-linux"
      "armv7l-linux"
      "i686-linux"
      "powerpc64le-linux"
      "riscv64-linux"
      "s390x-linux"
      "x86_64-darwin"
      "x86_64-linux"
    ];
  };

  parse-known = {
    expr = p.parse "x86_64-linux";
    expected = {
      cpu = "x86_64";
      kernel = "linux";
    };
  };
  parse-unknown-but-well-formed = {
    expr = p.parse "mips64el-freebsd";
    expected = {
      cpu = "mips64el";
      kernel = "freebsd";
    };
  };
  parse-malformed = {
    expr = map (s: fails (p.parse s)) [ "linux" "" "x86_64-unknown-linux-gnu" "x86_64-" 1 null ];
    expected = [ true true true true true true ];
  };

  isLinux-isDarwin = {
    expr = map (s: [ (p.isLinux s) (p.isDarwin s) ]) [
      "x86_64-linux"
      "aarch64-darwin"
      "riscv64-linux"
      "x86_64-freebsd"
    ];
    expected = [
      [ true false ]
      [ false true ]
      [ true false ]
      [ false false ]
    ];
  };
  isLinux-malformed = {
    expr = [
      (fails (p.isLinux "linux"))
      (fails (p.isDarwin "darwin"))
    ];
    expected = [ true true ];
  };

  toOci-every-known = {
    expr = map p.toOciString p.knownSystems;
    expected = [
      "darwin/arm64"
      "linux/arm64"
      "linux/arm/v6"
      "linux/arm/v7"
      "linux/386"
      "linux/ppc64le"
      "linux/riscv64"
      "linux/s390x"
      "darwin/amd64"
      "linux/amd64"
    ];
  };
  toOci-attrs = {
    expr = [
      (p.toOci "x86_64-linux")
      (p.toOci "armv7l-linux")
    ];
    expected = [
      {
        os = "linux";
        architecture = "amd64";
      }
      {
        os = "linux";
        architecture = "arm";
        variant = "v7";
      }
    ];
  };
  toOci-unknown = {
    expr = map (s: fails (p.toOci s)) [ "x86_64-windows" "" "if" 3 ];
    expected = [ true true true true ];
  };
  toOciString-unknown = {
    expr = fails (p.toOciString "mips-linux");
    expected = true;
  };
  ociArch-tags = {
    expr = map p.ociArch [ "x86_64-linux" "aarch64-linux" "armv7l-linux" "i686-linux" ];
    expected = [ "amd64" "arm64" "armv7" "386" ];
  };
  ociArch-unknown = {
    expr = fails (p.ociArch "x86_64-windows");
    expected = true;
  };

  fromOci-roundtrip = {
    expr = map (s: p.fromOci (p.toOciString s)) p.knownSystems;
    expected = p.knownSystems;
  };
  fromOci-attrs-roundtrip = {
    expr = map (s: p.fromOci (p.toOci s)) p.knownSystems;
    expected = p.knownSystems;
  };
  fromOci-arm64-v8-alias = {
    expr = [
      (p.fromOci "linux/arm64/v8")
      (p.fromOci {
        os = "linux";
        architecture = "arm64";
        variant = "v8";
      })
    ];
    expected = [ "aarch64-linux" "aarch64-linux" ];
  };
  fromOci-unknown = {
    expr = map (x: fails (p.fromOci x)) [
      "windows/amd64"
      "linux/amd64/v9"
      ""
      { os = "linux"; }
      { os = "linux"; architecture = 1; }
      42
    ];
    expected = [ true true true true true true ];
  };

  forEachSystem-basic = {
    expr = p.forEachSystem [ "x86_64-linux" "aarch64-linux" ] (s: p.ociArch s);
    expected = {
      x86_64-linux = "amd64";
      aarch64-linux = "arm64";
    };
  };
  forEachSystem-empty = {
    expr = p.forEachSystem [ ] (s: throw "not called");
    expected = { };
  };
  forEachSystem-bad-args = {
    expr = [
      (fails (p.forEachSystem "x86_64-linux" (s: s)))
      (fails (p.forEachSystem [ "x86_64-windows" ] (s: s)))
      (fails (p.forEachSystem [ "x86_64-linux" ] { }))
    ];
    expected = [ true true true ];
  };

  eachSystem-transposes = {
    expr = p.eachSystem [ "x86_64-linux" "aarch64-linux" ] (system: {
      packages.default = "pkg-${system}";
      "if" = system;
    });
    expected = {
      packages = {
        x86_64-linux.default = "pkg-x86_64-linux";
        aarch64-linux.default = "pkg-aarch64-linux";
      };
      "if" = {
        x86_64-linux = "x86_64-linux";
        aarch64-linux = "aarch64-linux";
      };
    };
  };
  eachSystem-uneven-outputs = {
    expr = p.eachSystem [ "x86_64-linux" "x86_64-darwin" ] (
      system: if p.isLinux system then { images.api = 1; } else { }
    );
    expected = {
      images.x86_64-linux.api = 1;
    };
  };
  eachSystem-empty = {
    expr = p.eachSystem [ ] (s: throw "not called");
    expected = { };
  };
  eachSystem-bad-args = {
    expr = [
      (fails (p.eachSystem [ "x86_64-linux" ] (s: "not a set")))
      (fails (p.eachSystem [ "x86_64-windows" ] (s: { })))
      (fails (p.eachSystem [ "x86_64-linux" ] "f"))
      (fails (p.eachSystem null (s: { })))
    ];
    expected = [ true true true true ];
  };
  eachDefaultSystem-systems = {
    expr = builtins.attrNames (p.eachDefaultSystem (system: { checks = { }; })).checks;
    expected = p.supportedSystems;
  };
}
