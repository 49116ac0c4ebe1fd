# Cases for forge.lib.attic. Each is { expr; expected; }.
{ lib, fails }:
let
  a = lib.attic;
  key = "main:6cOPPNt4YAWzp1Mau/LTxHxmtfk4vYcK2O0GWBsUf7g=";
  key2 = "ci:C9rmTe5uLQ2zD7V8lnZIxRzcDzIuN8shOHCGkRNsrYU=";
  main = {
    endpoint = "https://attic.example.com";
    cache = "main";
    publicKey = key;
  };
  ci = {
    endpoint = "https://attic.example.com/prefix/";
    cache = "ci";
    publicKey = key2;
  };
  show = p: "${lib.errors.showAttrPath p.path}: ${p.severity}: ${p.message}";
in
{
  problems-valid = {
    expr = a.problems main;
    expected = [ ];
  };
  problems-every-field-at-once = {
    expr = map show (a.problems {
      endpoint = "ftp://x";
      cache = "-bad";
      publicKey = "main:short=";
      extra = 1;
    });
    expected = [
      "extra: error: unknown attribute"
      "endpoint: error: must be an http:// or https:// URL such as \"https://attic.example.com\", got \"ftp://x\""
      "cache: error: must be an Attic cache name (a letter or digit, then up to 49 letters, digits, -, _ or +), got \"-bad\""
      "publicKey: error: must be a Nix public key \"<name>:<44 base64 characters ending in =>\", as printed by `attic cache info`, got \"main:short=\""
    ];
  };
  problems-empty-input = {
    expr = map show (a.problems { });
    expected = [
      "endpoint: error: required attribute is missing"
      "cache: error: required attribute is missing"
      "publicKey: error: required attribute is missing"
    ];
  };
  problems-wrong-types = {
    expr = map show (a.problems {
      endpoint = 1;
      cache = null;
      publicKey = [ ];
    });
    expected = [
      "endpoint: error: must be a string, got an integer: 1"
      "cache: error: must be a string, got null: null"
      "publicKey: error: must be a string, got a list: [ ]"
    ];
  };
  problems-http-warns = {
    expr = map show (a.problems (main // { endpoint = "http://10.0.0.5:8080"; }));
    expected = [ "endpoint: warning: uses plain HTTP; prefer https:// outside a private network" ];
  };
  problems-cache-name-limits = {
    expr = map (c: a.problems (main // { cache = c; }) == [ ]) [
      "a"
      "A1-_+"
      "x${builtins.concatStringsSep "" (builtins.genList (_: "y") 49)}"
      "x${builtins.concatStringsSep "" (builtins.genList (_: "y") 50)}"
      ""
      "a.b"
      "a/b"
      "if"
      "\${x}"
    ];
    expected = [ true true true false false false false true false ];
  };

  isValidPublicKey-cases = {
    expr = map a.isValidPublicKey [
      key
      "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY="
      "main:6cOPPNt4YAWzp1Mau/LTxHxmtfk4vYcK2O0GWBsUf7g"
      "main:6cOPPNt4YAWzp1Mau/LTxHxmtfk4vYcK2O0GWBsUf7g=="
      ":6cOPPNt4YAWzp1Mau/LTxHxmtfk4vYcK2O0GWBsUf7g="
      "6cOPPNt4YAWzp1Mau/LTxHxmtfk4vYcK2O0GWBsUf7g="
      "main:6cOPPNt4YAWzp1Mau-LTxHxmtfk4vYcK2O0GWBsUf7g="
      ""
      null
    ];
    expected = [ true true false false false false false false false ];
  };
  parsePublicKey-ok = {
    expr = a.parsePublicKey key;
    expected = {
      name = "main";
      key = "6cOPPNt4YAWzp1Mau/LTxHxmtfk4vYcK2O0GWBsUf7g=";
    };
  };
  parsePublicKey-bad = {
    expr = map (k: fails (a.parsePublicKey k)) [ "main" "" 1 ];
    expected = [ true true true ];
  };

  substituter-plain = {
    expr = a.substituter main;
    expected = "https://attic.example.com/main";
  };
  substituter-trailing-slashes-and-prefix = {
    expr = [
      (a.substituter ci)
      (a.substituter (main // { endpoint = "https://attic.example.com///"; }))
    ];
    expected = [
      "https://attic.example.com/prefix/ci"
      "https://attic.example.com/main"
    ];
  };
  substituter-http-still-works = {
    expr = a.substituter (main // { endpoint = "http://localhost:8080"; });
    expected = "http://localhost:8080/main";
  };
  substituter-invalid = {
    expr = map (c: fails (a.substituter c)) [
      (main // { publicKey = "nope"; })
      (builtins.removeAttrs main [ "cache" ])
      (main // { publickey = key; })
      "https://attic.example.com/main"
      { }
    ];
    expected = [ true true true true true ];
  };

  nixConfig-one = {
    expr = a.nixConfig main;
    expected = {
      extra-substituters = [ "https://attic.example.com/main" ];
      extra-trusted-public-keys = [ key ];
    };
  };
  nixConfig-list = {
    expr = a.nixConfig [ main ci ];
    expected = {
      extra-substituters = [ "https://attic.example.com/main" "https://attic.example.com/prefix/ci" ];
      extra-trusted-public-keys = [ key key2 ];
    };
  };
  nixConfig-empty = {
    expr = a.nixConfig [ ];
    expected = {
      extra-substituters = [ ];
      extra-trusted-public-keys = [ ];
    };
  };
  nixConfig-invalid-in-list = {
    expr = fails (a.nixConfig [ main { cache = "x"; } ]);
    expected = true;
  };
  nixSettings-one-and-list = {
    expr = [
      (a.nixSettings main)
      (a.nixSettings [ main ci ])
      (a.nixSettings [ ])
    ];
    expected = [
      {
        substituters = [ "https://attic.example.com/main" ];
        trusted-public-keys = [ key ];
      }
      {
        substituters = [ "https://attic.example.com/main" "https://attic.example.com/prefix/ci" ];
        trusted-public-keys = [ key key2 ];
      }
      {
        substituters = [ ];
        trusted-public-keys = [ ];
      }
    ];
  };
  nixSettings-invalid = {
    expr = fails (a.nixSettings (main // { endpoint = "attic.example.com"; }));
    expected = true;
  };

  # Credentials or a query in the endpoint would be written into nixConfig (and the store).
  problems-endpoint-credentials-query-fragment = {
    expr = map (e: map show (a.problems (main // { endpoint = e; }))) [
      "https://user:s3cret@attic.example.com"
      "https://tok3n@attic.example.com/prefix"
      "https://attic.example.com/?token=s3cret"
      "https://attic.example.com/prefix#frag"
    ];
    expected = [
      [ "endpoint: error: must not carry credentials (user-info before @): they would be written into nixConfig and the world-readable Nix store; remove them and give the token to Nix in a netrc file (netrc-file in nix.conf)" ]
      [ "endpoint: error: must not carry credentials (user-info before @): they would be written into nixConfig and the world-readable Nix store; remove them and give the token to Nix in a netrc file (netrc-file in nix.conf)" ]
      [ "endpoint: error: must not have a query or a fragment (? or #): the cache URL is <endpoint>/<cache>; put a token in a netrc file, never in the URL" ]
      [ "endpoint: error: must not have a query or a fragment (? or #): the cache URL is <endpoint>/<cache>; put a token in a netrc file, never in the URL" ]
    ];
  };
  nixConfig-refuses-credentials = {
    expr = fails (a.nixConfig (main // { endpoint = "https://user:s3cret@attic.example.com"; }));
    expected = true;
  };
}
