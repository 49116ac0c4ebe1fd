# Cases for forge.lib.performance. Each is { expr; expected; }. Building the check (pass and
# fail) is covered by tests/test_lib.py and by lib/tests/check.nix.
{ lib, fails }:
let
  perf = lib.performance;
  pkgs = import ./pkgs-shim.nix { system = "x86_64-linux"; };
  check = args: perf.closureSizeCheck ({ inherit pkgs; drv = pkgs.hello; } // args);
in
{
  parseSize-ints = {
    expr = map perf.parseSize [ 0 1 1000 ];
    expected = [ 0 1 1000 ];
  };
  parseSize-units = {
    expr = map perf.parseSize [ "12" "12 B" "1kB" "1 KB" "2 MB" "3 GB" "1 TB" "1 KiB" "500 MiB" "2 GiB" "1 TiB" ];
    expected = [
      12
      12
      1000
      1000
      2000000
      3000000000
      1000000000000
      1024
      524288000
      2147483648
      1099511627776
    ];
  };
  parseSize-fractions-and-spaces = {
    expr = map perf.parseSize [ "1.5GB" " 1.5 KiB " "0.1 B" "0 MiB" ];
    expected = [ 1500000000 1536 0 0 ];
  };
  parseSize-rejects = {
    expr = map (s: fails (perf.parseSize s)) [
      (-1)
      "-1"
      ""
      "lots"
      "5 megabytes"
      "5 mib"
      "1e6"
      "01"
      ".5 MiB"
      null
      1.5
      [ ]
    ];
    expected = [ true true true true true true true true true true true true ];
  };

  formatBytes-units = {
    expr = map perf.formatBytes [ 0 1 1023 1024 1536 1048575 1048576 524288000 1073741824 1099511627776 ];
    expected = [
      "0 B"
      "1 B"
      "1023 B"
      "1.0 KiB"
      "1.5 KiB"
      "1023.9 KiB"
      "1.0 MiB"
      "500.0 MiB"
      "1.0 GiB"
      "1.0 TiB"
    ];
  };
  formatBytes-rejects = {
    expr = map (b: fails (perf.formatBytes b)) [ (-1) "1" 1.5 ];
    expected = [ true true true ];
  };

  closureSizeCheck-shape = {
    expr =
      let
        d = check { maxBytes = "50 MiB"; };
      in
      {
        inherit (d) name budget budgetText top;
        graph = builtins.head d.exportReferencesGraph;
        target = d.target == "${pkgs.hello}";
      };
    expected = {
      name = "closure-size-hello";
      budget = 52428800;
      budgetText = "50.0 MiB";
      top = 10;
      graph = "closure-graph";
      target = true;
    };
  };
  closureSizeCheck-name-and-top = {
    expr =
      let
        d = check {
          maxBytes = 1;
          top = 3;
          name = "image-budget";
        };
      in
      [ d.name d.top ];
    expected = [ "image-budget" 3 ];
  };
  closureSizeCheck-store-path-string = {
    expr = (perf.closureSizeCheck {
      inherit pkgs;
      drv = "${pkgs.hello}";
      maxBytes = 1;
    }).name;
    expected = "closure-size-hello";
  };
  closureSizeCheck-bad-args = {
    expr = map fails [
      (check { maxBytes = "lots"; })
      (check { maxBytes = -5; })
      (check {
        maxBytes = 1;
        top = 0;
      })
      (check {
        maxBytes = 1;
        name = 5;
      })
      (perf.closureSizeCheck {
        pkgs = { };
        drv = pkgs.hello;
        maxBytes = 1;
      })
      (perf.closureSizeCheck {
        inherit pkgs;
        drv = 42;
        maxBytes = 1;
      })
    ];
    expected = [ true true true true true true ];
  };

  # Sizes beyond the bound are refused instead of wrapping around to a negative budget.
  parseSize-bounded = {
    expr = [
      (perf.parseSize "1024 TiB")
      (fails (perf.parseSize "1025 TiB"))
      (fails (perf.parseSize "10000000 TiB"))
      (fails (perf.parseSize "1024.5 TiB"))
      (fails (perf.parseSize "99999999999999999999999"))
      (fails (perf.parseSize 1125899906842625))
      (perf.parseSize "0.5 TiB")
    ];
    expected = [ 1125899906842624 true true true true true 549755813888 ];
  };
}
