/**
  `forge.lib.attic`: substituter settings for an Attic binary cache.

  Every function takes the same cache description `{ endpoint; cache; publicKey; }`:

  - `endpoint`: the Attic server URL, `http://` or `https://`, optionally with a path prefix; a
    trailing `/` is ignored. No user-info (`https://user:token@…`), query or fragment: the URL
    ends up in `nixConfig` and the world-readable store (tokens go in a netrc file).
  - `cache`: the cache name (Attic's rule: a letter or digit, then up to 49 letters, digits, `-`,
    `_` or `+`).
  - `publicKey`: the cache's signing key as Nix expects it, `<name>:<base64 of 32 bytes>`
    (what `attic cache info <cache>` prints as "Public Key").

  The substituter URL is `<endpoint>/<cache>`. Nothing is read from the environment: tokens for
  private caches belong in a netrc file configured on the machine, never in Nix.
  `nixConfig` and `nixSettings` also accept a list of caches.
*/
{ lib }:
let
  inherit (builtins)
    concatMap
    isAttrs
    isList
    isString
    map
    match
    ;
  r = lib.errorReporter;

  cacheNameRe = "[A-Za-z0-9][-A-Za-z0-9_+]{0,49}";
  # An Ed25519 public key is 32 bytes: 43 base64 characters and one `=`.
  publicKeyRe = "([A-Za-z0-9][-A-Za-z0-9._+]*):([A-Za-z0-9+/]{43}=)";
  endpointRe = "(https?)://[^/[:space:]]+(/[^[:space:]]*)?";

  example = ''{ endpoint = "https://attic.example.com"; cache = "main"; publicKey = "main:<44 base64 characters>"; }'';

  stripSlashes =
    s:
    let
      m = match "(.*[^/])/+" s;
    in
    if m == null then s else builtins.head m;

  # Validate one cache description and return it with its substituter URL, or fail listing every
  # problem at once.
  checked =
    where: cfg:
    let
      problems =
        if !isAttrs cfg then
          r.problem {
            message = "expected an attribute set ${example}, got ${lib.errors.describe cfg}: ${lib.errors.show cfg}";
          }
        else
          attic.problems cfg;
      good = r.report {
        inherit where problems;
        value = cfg;
      };
    in
    good // { substituter = "${stripSlashes good.endpoint}/${good.cache}"; };

  toList = x: if isList x then x else [ x ];

  attic = {
    /**
      Every problem with a cache description, as `forge.lib.errorReporter` problems (`[ ]` when
      it is valid): missing or unknown attributes, wrong types, a malformed endpoint, cache name
      or public key. A plain-HTTP endpoint is a warning (the cache's signatures still protect the
      content, but traffic is readable).

      # Inputs

      `cfg`
      : `{ endpoint, cache, publicKey }`

      # Type

      ```
      problems :: AttrSet -> [Problem]
      ```

      # Examples
      :::{.example}
      ## `forge.lib.attic.problems` usage example

      ```nix
      map (p: forge.lib.errors.showAttrPath p.path) (forge.lib.attic.problems { endpoint = "attic.example.com"; cache = "main"; publickey = "x"; })
      => [ "publicKey" "publickey" "endpoint" ]
      ```
      :::
    */
    problems =
      cfg:
      r.checkAttrs {
        value = cfg;
        required = [
          "endpoint"
          "cache"
          "publicKey"
        ];
        optional = [ ];
      }
      ++ (
        if cfg ? endpoint && isString cfg.endpoint && match "[A-Za-z][-A-Za-z0-9+.]*://[^/]*@.*" cfg.endpoint != null then
          # Never echo the value: it holds a secret.
          r.error [ "endpoint" ] "must not carry credentials (user-info before @): they would be written into nixConfig and the world-readable Nix store; remove them and give the token to Nix in a netrc file (netrc-file in nix.conf)"
        else if cfg ? endpoint && isString cfg.endpoint && match "[^?#]*[?#].*" cfg.endpoint != null then
          r.error [ "endpoint" ] "must not have a query or a fragment (? or #): the cache URL is <endpoint>/<cache>; put a token in a netrc file, never in the URL"
        else if cfg ? endpoint then
          r.checkMatch [ "endpoint" ] endpointRe "an http:// or https:// URL such as \"https://attic.example.com\"" cfg.endpoint
          ++ r.warnIf (
            isString cfg.endpoint && match "http://.*" cfg.endpoint != null
          ) [ "endpoint" ] "uses plain HTTP; prefer https:// outside a private network"
        else
          [ ]
      )
      ++ (
        if cfg ? cache then
          r.checkMatch [ "cache" ] cacheNameRe
            "an Attic cache name (a letter or digit, then up to 49 letters, digits, -, _ or +)"
            cfg.cache
        else
          [ ]
      )
      ++ (
        if cfg ? publicKey then
          r.checkMatch [ "publicKey" ] publicKeyRe
            "a Nix public key \"<name>:<44 base64 characters ending in =>\", as printed by `attic cache info`"
            cfg.publicKey
        else
          [ ]
      );

    /**
      Whether a string is a well-formed Nix binary-cache public key, `<name>:<base64 of 32 bytes>`.

      # Inputs

      `key`
      : the key

      # Type

      ```
      isValidPublicKey :: String -> Bool
      ```

      # Examples
      :::{.example}
      ## `forge.lib.attic.isValidPublicKey` usage example

      ```nix
      forge.lib.attic.isValidPublicKey "main:6cOPPNt4YAWzp1Mau/LTxHxmtfk4vYcK2O0GWBsUf7g="
      => true

      forge.lib.attic.isValidPublicKey "main:not-base64"
      => false
      ```
      :::
    */
    isValidPublicKey = key: isString key && match publicKeyRe key != null;

    /**
      Split a public key into `{ name; key; }`.

      # Inputs

      `key`
      : a public key, `<name>:<base64>`

      # Type

      ```
      parsePublicKey :: String -> { name :: String, key :: String }
      ```

      # Examples
      :::{.example}
      ## `forge.lib.attic.parsePublicKey` usage example

      ```nix
      forge.lib.attic.parsePublicKey "main:6cOPPNt4YAWzp1Mau/LTxHxmtfk4vYcK2O0GWBsUf7g="
      => { key = "6cOPPNt4YAWzp1Mau/LTxHxmtfk4vYcK2O0GWBsUf7g="; name = "main"; }

      forge.lib.attic.parsePublicKey "main"
      => error: forge.lib.attic.parsePublicKey: "main" is not a Nix public key [bad-public-key]
      ```
      :::
    */
    parsePublicKey =
      key:
      let
        m = if isString key then match publicKeyRe key else null;
      in
      if m == null then
        lib.errors.throw {
          where = "forge.lib.attic.parsePublicKey";
          kind = "bad-public-key";
          message = "${lib.errors.show key} is not a Nix public key";
          context = { inherit key; };
          suggestions = [ "a key looks like \"main:6cOPPNt4YAWzp1Mau/LTxHxmtfk4vYcK2O0GWBsUf7g=\" (`attic cache info main` prints it)" ];
        }
      else
        {
          name = builtins.head m;
          key = builtins.elemAt m 1;
        };

    /**
      The substituter URL of a cache, `<endpoint>/<cache>`.

      # Inputs

      `cfg`
      : `{ endpoint, cache, publicKey }`

      # Type

      ```
      substituter :: AttrSet -> String
      ```

      # Examples
      :::{.example}
      ## `forge.lib.attic.substituter` usage example

      ```nix
      forge.lib.attic.substituter { endpoint = "https://attic.example.com/"; cache = "main"; publicKey = "main:6cOPPNt4YAWzp1Mau/LTxHxmtfk4vYcK2O0GWBsUf7g="; }
      => "https://attic.example.com/main"

      forge.lib.attic.substituter { endpoint = "attic.example.com"; cache = "main"; publicKey = "main"; }
      => error: forge.lib.attic.substituter: 2 errors:
        error: endpoint: must be an http:// or https:// URL such as "https://attic.example.com", got "attic.example.com"
      ```
      :::
    */
    substituter = cfg: (checked "forge.lib.attic.substituter" cfg).substituter;

    /**
      The flake `nixConfig` fragment that adds the cache(s): `extra-substituters` and
      `extra-trusted-public-keys`. Copy the values into your flake's `nixConfig` (Nix reads
      `nixConfig` before evaluating inputs, so it must be written out literally there), or use the
      attribute set in generated files and `nix.conf` fragments.

      # Inputs

      `caches`
      : one `{ endpoint, cache, publicKey }` or a list of them

      # Type

      ```
      nixConfig :: (AttrSet | [AttrSet]) -> { extra-substituters :: [String], extra-trusted-public-keys :: [String] }
      ```

      # Examples
      :::{.example}
      ## `forge.lib.attic.nixConfig` usage example

      ```nix
      forge.lib.attic.nixConfig { endpoint = "https://attic.example.com"; cache = "main"; publicKey = "main:6cOPPNt4YAWzp1Mau/LTxHxmtfk4vYcK2O0GWBsUf7g="; }
      => { extra-substituters = [ "https://attic.example.com/main" ]; extra-trusted-public-keys = [ "main:6cOPPNt4YAWzp1Mau/LTxHxmtfk4vYcK2O0GWBsUf7g=" ]; }

      forge.lib.attic.nixConfig [ ]
      => { extra-substituters = [ ]; extra-trusted-public-keys = [ ]; }
      ```
      :::
    */
    nixConfig =
      caches:
      let
        cs = map (checked "forge.lib.attic.nixConfig") (toList caches);
      in
      {
        extra-substituters = map (c: c.substituter) cs;
        extra-trusted-public-keys = map (c: c.publicKey) cs;
      };

    /**
      The NixOS `nix.settings` attribute set that adds the cache(s): `substituters` and
      `trusted-public-keys` (NixOS merges these lists with the defaults, so cache.nixos.org stays).

      # Inputs

      `caches`
      : one `{ endpoint, cache, publicKey }` or a list of them

      # Type

      ```
      nixSettings :: (AttrSet | [AttrSet]) -> { substituters :: [String], trusted-public-keys :: [String] }
      ```

      # Examples
      :::{.example}
      ## `forge.lib.attic.nixSettings` usage example

      ```nix
      forge.lib.attic.nixSettings [ { endpoint = "https://attic.example.com"; cache = "main"; publicKey = "main:6cOPPNt4YAWzp1Mau/LTxHxmtfk4vYcK2O0GWBsUf7g="; } { endpoint = "https://attic.example.com"; cache = "ci"; publicKey = "ci:C9rmTe5uLQ2zD7V8lnZIxRzcDzIuN8shOHCGkRNsrYU="; } ]
      => { substituters = [ "https://attic.example.com/main" "https://attic.example.com/ci" ]; trusted-public-keys = [ "main:6cOPPNt4YAWzp1Mau/LTxHxmtfk4vYcK2O0GWBsUf7g=" "ci:C9rmTe5uLQ2zD7V8lnZIxRzcDzIuN8shOHCGkRNsrYU=" ]; }
      ```
      :::
    */
    nixSettings =
      caches:
      let
        cs = map (checked "forge.lib.attic.nixSettings") (toList caches);
      in
      {
        substituters = map (c: c.substituter) cs;
        trusted-public-keys = map (c: c.publicKey) cs;
      };
  };
in
attic
