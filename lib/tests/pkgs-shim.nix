/**
  A minimal stand-in for the part of nixpkgs that forge.lib's check builders use, for tests on
  machines where nixpkgs cannot be fetched. Test code only: the library itself never names a host
  path. `runCommand` has nixpkgs' interface (`runCommand name env script`) but runs the script
  with the host's /bin/sh and coreutils, which works because these machines build with
  `sandbox = false`.
*/
{ system }:
let
  runCommand =
    name: env: script:
    derivation (
      {
        inherit name system;
        builder = "/bin/sh";
        # nixpkgs' stdenv runs build scripts with `set -eu` and pipefail-like strictness; -eu here
        # keeps the tests at least as strict.
        args = [
          "-euc"
          script
        ];
        PATH = "/usr/bin:/bin";
      }
      // env
    );

  # A small two-path closure: `hello` refers to `hello-data`.
  hello-data = runCommand "hello-data" { } ''
    mkdir -p "$out/share"
    head -c 20000 /dev/zero > "$out/share/payload"
  '';
  hello = runCommand "hello" { data = hello-data; } ''
    mkdir -p "$out/bin"
    printf '#!/bin/sh\n# data: %s\necho hello\n' "$data" > "$out/bin/hello"
    chmod +x "$out/bin/hello"
  '';
in
{
  inherit
    system
    runCommand
    hello
    hello-data
    ;
  writeText = name: text: runCommand name { inherit text; } ''printf '%s' "$text" > "$out"'';
}
