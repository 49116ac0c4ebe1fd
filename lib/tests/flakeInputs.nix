# Cases for forge.lib.flakeInputs. Each is { expr; expected; }.
{ lib, fails }:
let
  f = lib.flakeInputs;
  pkgs = import ./pkgs-shim.nix { system = "x86_64-linux"; };
  gh = owner: repo: rev: {
    locked = {
      type = "github";
      inherit owner repo rev;
    };
  };
  mkLock = nodes: {
    version = 7;
    root = "root";
    inherit nodes;
  };
  suggestions = lock: map (d: d.suggestion) (f.duplicates lock);

  basic = mkLock {
    root.inputs = {
      nixpkgs = "nixpkgs";
      tool = "tool";
    };
    nixpkgs = gh "NixOS" "nixpkgs" "a";
    tool = gh "acme" "tool" "b" // {
      inputs.nixpkgs = "nixpkgs_2";
    };
    nixpkgs_2 = gh "NixOS" "nixpkgs" "c";
  };
in
{
  sourceOf-kinds = {
    expr = map f.sourceOf [
      (gh "NixOS" "NixPkgs" "x")
      { locked = { type = "gitlab"; owner = "o"; repo = "r"; host = "GitLab.Example.com"; }; }
      { locked = { type = "sourcehut"; owner = "~u"; repo = "r"; }; }
      { locked = { type = "git"; url = "https://example.com/r.git?ref=main&rev=abc"; }; }
      { locked = { type = "tarball"; url = "https://example.com/r.tar.gz"; }; }
      { locked = { type = "path"; path = "/nix/store/x-src"; }; }
      { locked = { type = "indirect"; id = "nixpkgs"; }; }
      { locked = { type = "unknown-type"; }; }
      { locked = { type = "git"; }; }
      { inputs = { }; }
      { }
    ];
    expected = [
      "github:nixos/nixpkgs"
      "gitlab:o/r@gitlab.example.com"
      "sourcehut:~u/r"
      "git:https://example.com/r.git"
      "tarball:https://example.com/r.tar.gz"
      "path:/nix/store/x-src"
      "indirect:nixpkgs"
      null
      null
      null
      null
    ];
  };

  duplicates-basic-full = {
    expr = f.duplicates basic;
    expected = [
      {
        input = "tool/nixpkgs";
        path = [ "tool" "nixpkgs" ];
        node = "nixpkgs_2";
        source = "github:nixos/nixpkgs";
        duplicateOf = "nixpkgs";
        follows = "nixpkgs";
        suggestion = "inputs.tool.inputs.nixpkgs.follows = \"nixpkgs\";";
      }
    ];
  };
  duplicates-from-file = {
    expr = suggestions ./fixtures/duplicate-nixpkgs.lock.json;
    expected = [ "inputs.tool.inputs.nixpkgs.follows = \"nixpkgs\";" ];
  };
  readLock-file = {
    expr = (f.readLock ./fixtures/duplicate-nixpkgs.lock.json).version;
    expected = 7;
  };
  duplicates-empty-lock = {
    expr = [
      (f.duplicates (mkLock { root = { }; }))
      (f.duplicates (mkLock { root.inputs = { }; }))
      (f.duplicates { nodes = { }; })
    ];
    expected = [ [ ] [ ] [ ] ];
  };
  duplicates-bad-lock = {
    expr = map (l: fails (f.duplicates l)) [ { } 1 { nodes = [ ]; } ];
    expected = [ true true true ];
  };
  duplicates-follows-already = {
    expr = f.duplicates (mkLock {
      root.inputs = {
        nixpkgs = "nixpkgs";
        tool = "tool";
      };
      nixpkgs = gh "NixOS" "nixpkgs" "a";
      tool = gh "acme" "tool" "b" // {
        inputs.nixpkgs = [ "nixpkgs" ];
      };
    });
    expected = [ ];
  };
  duplicates-two-root-inputs-are-deliberate = {
    expr = f.duplicates (mkLock {
      root.inputs = {
        nixpkgs = "nixpkgs";
        nixpkgs-stable = "nixpkgs_2";
      };
      nixpkgs = gh "NixOS" "nixpkgs" "a";
      nixpkgs_2 = gh "NixOS" "nixpkgs" "b";
    });
    expected = [ ];
  };
  duplicates-prefer-input-named-like-node = {
    expr = suggestions (mkLock {
      root.inputs = {
        a-pkgs = "nixpkgs_2";
        nixpkgs = "nixpkgs";
        tool = "tool";
      };
      nixpkgs = gh "NixOS" "nixpkgs" "a";
      nixpkgs_2 = gh "NixOS" "nixpkgs" "b";
      tool = gh "acme" "tool" "c" // {
        inputs.nixpkgs = "nixpkgs_3";
      };
      nixpkgs_3 = gh "NixOS" "nixpkgs" "d";
    });
    expected = [ "inputs.tool.inputs.nixpkgs.follows = \"nixpkgs\";" ];
  };
  duplicates-root-input-other-name = {
    expr = suggestions (mkLock {
      root.inputs = {
        pkgs = "nixpkgs";
        tool = "tool";
      };
      nixpkgs = gh "NixOS" "nixpkgs" "a";
      tool = gh "acme" "tool" "c" // {
        inputs.nixpkgs = "nixpkgs_2";
      };
      nixpkgs_2 = gh "NixOS" "nixpkgs" "d";
    });
    expected = [ "inputs.tool.inputs.nixpkgs.follows = \"pkgs\";" ];
  };
  duplicates-not-in-root-follow-nearest = {
    expr = suggestions (mkLock {
      root.inputs = {
        a = "a";
        b = "b";
      };
      a = gh "acme" "a" "1" // {
        inputs.nixpkgs = "nixpkgs";
      };
      b = gh "acme" "b" "2" // {
        inputs.nixpkgs = "nixpkgs_2";
      };
      nixpkgs = gh "NixOS" "nixpkgs" "a";
      nixpkgs_2 = gh "NixOS" "nixpkgs" "b";
    });
    expected = [ "inputs.b.inputs.nixpkgs.follows = \"a/nixpkgs\";" ];
  };
  duplicates-nested-and-keyword-names = {
    expr = suggestions (mkLock {
      root.inputs = {
        nixpkgs = "nixpkgs";
        "if" = "if";
      };
      nixpkgs = gh "NixOS" "nixpkgs" "a";
      "if" = gh "acme" "if" "1" // {
        inputs."deploy-rs" = "deploy-rs";
      };
      deploy-rs = gh "serokell" "deploy-rs" "2" // {
        inputs.nixpkgs = "nixpkgs_2";
      };
      nixpkgs_2 = gh "NixOS" "nixpkgs" "b";
    });
    expected = [ "inputs.\"if\".inputs.deploy-rs.inputs.nixpkgs.follows = \"nixpkgs\";" ];
  };
  duplicates-several-sorted = {
    expr = map (d: d.input) (f.duplicates (mkLock {
      root.inputs = {
        nixpkgs = "nixpkgs";
        utils = "utils";
        z = "z";
        a = "a";
      };
      nixpkgs = gh "NixOS" "nixpkgs" "1";
      utils = gh "numtide" "flake-utils" "1";
      z = gh "acme" "z" "1" // {
        inputs = {
          nixpkgs = "nixpkgs_2";
          flake-utils = "utils_2";
        };
      };
      a = gh "acme" "a" "1" // {
        inputs.nixpkgs = "nixpkgs_3";
      };
      nixpkgs_2 = gh "NixOS" "nixpkgs" "2";
      nixpkgs_3 = gh "NixOS" "nixpkgs" "3";
      utils_2 = gh "numtide" "flake-utils" "2";
    }));
    expected = [ "a/nixpkgs" "z/flake-utils" "z/nixpkgs" ];
  };
  duplicates-unreachable-node-ignored = {
    expr = f.duplicates (mkLock {
      root.inputs.nixpkgs = "nixpkgs";
      nixpkgs = gh "NixOS" "nixpkgs" "a";
      stale = gh "acme" "stale" "1" // {
        inputs.nixpkgs = "nixpkgs_2";
      };
      nixpkgs_2 = gh "NixOS" "nixpkgs" "b";
    });
    expected = [ ];
  };
  duplicates-git-urls = {
    expr = suggestions (mkLock {
      root.inputs = {
        lib = "lib";
        tool = "tool";
      };
      lib.locked = {
        type = "git";
        url = "https://git.example.com/lib.git?ref=main";
      };
      tool = gh "acme" "tool" "1" // {
        inputs.lib = "lib_2";
      };
      lib_2.locked = {
        type = "git";
        url = "https://git.example.com/lib.git?ref=v2";
      };
    });
    expected = [ "inputs.tool.inputs.lib.follows = \"lib\";" ];
  };

  format-none = {
    expr = f.format [ ];
    expected = "forge.lib.flakeInputs: no input pulls a second copy of another input";
  };
  format-some = {
    expr = f.format (f.duplicates basic);
    expected = builtins.concatStringsSep "\n" [
      "forge.lib.flakeInputs: 1 input pulls a second copy of an input already in flake.lock; add to flake.nix:"
      "  inputs.tool.inputs.nixpkgs.follows = \"nixpkgs\";  # tool/nixpkgs is lock node \"nixpkgs_2\", a copy of github:nixos/nixpkgs (node \"nixpkgs\")"
      "  then run: nix flake lock"
    ];
  };

  check-clean = {
    expr =
      let
        d = f.check {
          inherit pkgs;
          lock = mkLock { root = { }; };
        };
      in
      [ d.name d.failed ];
    expected = [ "flake-inputs" false ];
  };
  check-duplicates = {
    expr =
      let
        d = f.check {
          inherit pkgs;
          lock = basic;
          name = "inputs-hygiene";
        };
      in
      [ d.name d.failed (builtins.head (builtins.split "\n" d.report)) ];
    expected = [
      "inputs-hygiene"
      true
      "forge.lib.flakeInputs.check: 1 input pulls a second copy of an input already in flake.lock; add to flake.nix:"
    ];
  };
  check-ignore = {
    expr =
      (f.check {
        inherit pkgs;
        lock = basic;
        ignore = [ "tool/nixpkgs" ];
      }).failed;
    expected = false;
  };
  check-bad-args = {
    expr = [
      (fails (f.check {
        pkgs = { };
        lock = basic;
      }))
      (fails (f.check {
        inherit pkgs;
        lock = basic;
        ignore = "tool/nixpkgs";
      }))
      (fails (f.check {
        inherit pkgs;
        lock = "not a lock";
      }))
    ];
    expected = [ true true true ];
  };

  # Tarball inputs are identified by their source, not the locked URL of one version.
  sourceOf-tarballs-by-source = {
    expr = map f.sourceOf [
      {
        locked = { type = "tarball"; url = "https://releases.nixos.org/nixos/26.05/nixos-26.05.9592.21a67dc47014/nixexprs.tar.xz"; };
        original = { type = "tarball"; url = "https://channels.nixos.org/nixos-26.05/nixexprs.tar.xz"; };
      }
      { locked = { type = "tarball"; url = "https://github.com/NixOS/nixpkgs/archive/0123456789abcdef0123456789abcdef01234567.tar.gz"; }; }
      { locked = { type = "tarball"; url = "https://api.flakehub.com/f/pinned/NixOS/nixpkgs/0.2311.554738%2Brev-abc/018c/source.tar.gz?rev=abc"; };
        original = { type = "tarball"; url = "https://flakehub.com/f/NixOS/nixpkgs/0.2311.*.tar.gz"; }; }
      { locked = { type = "tarball"; url = "https://example.com/downloads/tool-1.2.tar.gz?x=1"; };
        original = { type = "tarball"; url = "https://example.com/downloads/tool-latest.tar.gz"; }; }
    ];
    expected = [
      "github:nixos/nixpkgs"
      "github:nixos/nixpkgs"
      "flakehub:nixos/nixpkgs"
      "tarball:https://example.com/downloads/tool-latest.tar.gz"
    ];
  };
  duplicates-tarball-versions-of-one-source = {
    expr = suggestions (mkLock {
      root.inputs = { nixpkgs = "nixpkgs"; tool = "tool"; };
      nixpkgs = {
        locked = { type = "tarball"; url = "https://releases.nixos.org/nixos/26.05/nixos-26.05.1.aaaaaaaaaaaa/nixexprs.tar.xz"; };
        original = { type = "tarball"; url = "https://channels.nixos.org/nixos-26.05/nixexprs.tar.xz"; };
      };
      tool = gh "acme" "tool" "b" // { inputs.nixpkgs = "nixpkgs_2"; };
      nixpkgs_2 = {
        locked = { type = "tarball"; url = "https://releases.nixos.org/nixos/26.05/nixos-26.05.2.bbbbbbbbbbbb/nixexprs.tar.xz"; };
        original = { type = "tarball"; url = "https://channels.nixos.org/nixos-26.05/nixexprs.tar.xz"; };
      };
    });
    expected = [ "inputs.tool.inputs.nixpkgs.follows = \"nixpkgs\";" ];
  };
  # NixOS/nix as an input: its own nixpkgs should follow yours, but its nixpkgs-23-11 and
  # nixpkgs-regression pin exact revisions on purpose (`original.rev`) and are not reported.
  duplicates-deliberate-pins-are-not-reported = {
    expr = suggestions (mkLock {
      root.inputs = { nixpkgs = "nixpkgs"; nix = "nix"; };
      nixpkgs = gh "NixOS" "nixpkgs" "a";
      nix = gh "NixOS" "nix" "n" // {
        inputs = { nixpkgs = "nixpkgs_2"; nixpkgs-23-11 = "nixpkgs-23-11"; nixpkgs-regression = "nixpkgs-regression"; };
      };
      nixpkgs_2 = {
        locked = { type = "tarball"; url = "https://releases.nixos.org/nixos/26.05/nixos-26.05.9592.21a67dc47014/nixexprs.tar.xz"; };
        original = { type = "tarball"; url = "https://channels.nixos.org/nixos-26.05/nixexprs.tar.xz"; };
      };
      nixpkgs-23-11 = gh "NixOS" "nixpkgs" "a62e" // { original = { type = "github"; owner = "NixOS"; repo = "nixpkgs"; rev = "a62e6edd6d5e1fa0329b8653c801147986f8d446"; }; };
      nixpkgs-regression = gh "NixOS" "nixpkgs" "215d" // { original = { type = "github"; owner = "NixOS"; repo = "nixpkgs"; rev = "215d4d0fd80ca5163643b03a33fde804a29cc1e2"; }; };
    });
    expected = [ "inputs.nix.inputs.nixpkgs.follows = \"nixpkgs\";" ];
  };
}
