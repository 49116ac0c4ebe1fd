# Cases for forge.lib.errors. Each is { expr; expected; }.
{ lib, fails }:
let
  e = lib.errors;
  tricky = [
    ""
    "\${x}"
    "$${x}"
    "$"
    "\\"
    "\"quoted\""
    "''"
    "a\nb\r\tc"
    "é→✓"
    "$\\{x}"
  ];
  sample = e.mkError {
    where = "my.f";
    kind = "bad-port";
    message = "port out of range";
    context.port = 0;
    suggestions = [ "my.f { port = 8080; }" ];
  };
in
{
  escapeString-plain = {
    expr = e.escapeString "api";
    expected = ''"api"'';
  };
  escapeString-interpolation = {
    expr = e.escapeString "\${x} $y $${z}";
    expected = "\"\\\${x} \\$y \\$\\\${z}\"";
  };
  # The round trip (Nix reads each rendered literal back as the original string) is in
  # tests/test_lib.py: importing a generated file is not possible under `nix-instantiate --eval`.
  escapeString-tricky = {
    expr = map e.escapeString tricky;
    expected = [
      ''""''
      ''"\''${x}"''
      ''"\$\''${x}"''
      ''"\$"''
      ''"\\"''
      ''"\"quoted\""''
      ''"'''"''
      ''"a\nb\r\tc"''
      ''"é→✓"''
      ''"\$\\{x}"''
    ];
  };
  escapeString-roundtrip-special = {
    expr = e.escapeString "a\"b\\c\nd\re\tf";
    expected = ''"a\"b\\c\nd\re\tf"'';
  };
  escapeString-empty = {
    expr = e.escapeString "";
    expected = ''""'';
  };
  escapeString-unicode-passes = {
    expr = e.escapeString "é→✓";
    expected = ''"é→✓"'';
  };

  showAttrName-identifier = {
    expr = map e.showAttrName [ "api" "_x" "a-b" "a'" ];
    expected = [ "api" "_x" "a-b" "a'" ];
  };
  showAttrName-keywords = {
    expr = map e.showAttrName [ "if" "then" "else" "let" "in" "rec" "with" "inherit" "assert" "or" ];
    expected = map (k: ''"${k}"'') [ "if" "then" "else" "let" "in" "rec" "with" "inherit" "assert" "or" ];
  };
  showAttrName-needs-quotes = {
    expr = map e.showAttrName [ "" "1a" "a.b" "deploy:api" "\${x}" ];
    expected = [ ''""'' ''"1a"'' ''"a.b"'' ''"deploy:api"'' ''"\''${x}"'' ];
  };
  showAttrPath-mixed = {
    expr = e.showAttrPath [ "services" "in" "a.b" ];
    expected = ''services."in"."a.b"'';
  };
  showAttrPath-empty = {
    expr = e.showAttrPath [ ];
    expected = "<root>";
  };

  show-scalars = {
    expr = map e.show [ null true false 1 (-2) "s" ];
    expected = [ "null" "true" "false" "1" "-2" ''"s"'' ];
  };
  show-float = {
    expr = e.show 1.5;
    expected = "1.500000";
  };
  show-function = {
    expr = e.show (x: x);
    expected = "«lambda»";
  };
  show-empty-containers = {
    expr = map e.show [ [ ] { } ];
    expected = [ "[ ]" "{ }" ];
  };
  show-nested-elided = {
    expr = e.show {
      a = [ [ [ [ 1 ] ] ] ];
      "if" = { };
    };
    expected = ''{ a = [ [ [ … ] ] ]; "if" = { }; }'';
  };
  show-derivation = {
    expr = e.show {
      type = "derivation";
      name = "hello";
    };
    expected = "«derivation hello»";
  };
  show-path = {
    expr = e.show /some/abs;
    expected = "/some/abs";
  };
  show-does-not-force-deeper = {
    expr = e.show { a = { b = { c = { d = throw "never forced"; }; }; }; };
    expected = "{ a = { b = { c = { … }; }; }; }";
  };

  describe-all = {
    expr = map e.describe [ true 1.0 1 (x: x) [ ] null /p { } "" ];
    expected = [
      "a Boolean"
      "a float"
      "an integer"
      "a function"
      "a list"
      "null"
      "a path"
      "an attribute set"
      "a string"
    ];
  };

  showChoices-none = {
    expr = e.showChoices [ ];
    expected = "(none)";
  };
  showChoices-one = {
    expr = e.showChoices [ "a" ];
    expected = ''"a"'';
  };
  showChoices-two = {
    expr = e.showChoices [ "a" "b" ];
    expected = ''"a" or "b"'';
  };
  showChoices-three = {
    expr = e.showChoices [ "a" "b" "c" ];
    expected = ''"a", "b" or "c"'';
  };

  mkError-fields = {
    expr = sample;
    expected = {
      _type = "forge.error";
      where = "my.f";
      kind = "bad-port";
      message = "port out of range";
      context.port = 0;
      suggestions = [ "my.f { port = 8080; }" ];
    };
  };
  mkError-defaults = {
    expr =
      (e.mkError {
        where = "f";
        kind = "k";
        message = "m";
      }).context == { }
      && (e.mkError {
        where = "f";
        kind = "k";
        message = "m";
      }).suggestions == [ ];
    expected = true;
  };
  mkError-rejects-bad-fields = {
    expr = map fails [
      (e.mkError { where = 1; kind = "k"; message = "m"; })
      (e.mkError { where = "f"; kind = null; message = "m"; })
      (e.mkError { where = "f"; kind = "k"; message = [ ]; })
      (e.mkError { where = "f"; kind = "k"; message = "m"; context = [ ]; })
      (e.mkError { where = "f"; kind = "k"; message = "m"; suggestions = "s"; })
    ];
    expected = [ true true true true true ];
  };

  isError-true = {
    expr = e.isError sample;
    expected = true;
  };
  isError-false = {
    expr = map e.isError [ { kind = "k"; } "forge.error" null { _type = "other"; } ];
    expected = [ false false false false ];
  };

  render-full = {
    expr = e.render sample;
    expected = "my.f: port out of range [bad-port]\n  port = 0\n  hint: my.f { port = 8080; }";
  };
  render-plain-attrset = {
    expr = e.render {
      where = "f";
      kind = "k";
      message = "m";
    };
    expected = "f: m [k]";
  };
  render-multiline-and-keyword-context = {
    expr = e.render {
      where = "f";
      kind = "k";
      message = "line one\nline two";
      context = {
        "in" = "\${x}";
      };
      suggestions = [ "a\nb" ];
    };
    expected = "f: line one\n  line two [k]\n  \"in\" = \"\\\${x}\"\n  hint: a\n    b";
  };

  throw-fails = {
    expr = fails (e.throw sample);
    expected = true;
  };
  throw-fails-plain = {
    expr = fails (e.throw {
      where = "f";
      kind = "k";
      message = "m";
    });
    expected = true;
  };

  assertMsg-true = {
    expr = e.assertMsg "f" true "never";
    expected = true;
  };
  assertMsg-false = {
    expr = fails (e.assertMsg "f" false "bad");
    expected = true;
  };
  assertOneOf-member = {
    expr = e.assertOneOf "f" "os" "linux" [ "linux" "darwin" ];
    expected = true;
  };
  assertOneOf-not-member = {
    expr = fails (e.assertOneOf "f" "os" "windows" [ "linux" "darwin" ]);
    expected = true;
  };
  assertOneOf-empty-allowed = {
    expr = fails (e.assertOneOf "f" "os" "linux" [ ]);
    expected = true;
  };
  assertType-single = {
    expr = e.assertType "f" "port" "int" 80;
    expected = true;
  };
  assertType-list = {
    expr = e.assertType "f" "name" [ "null" "string" ] null;
    expected = true;
  };
  assertType-wrong = {
    expr = fails (e.assertType "f" "port" "int" "80");
    expected = true;
  };

  # show forces what it prints only, and survives a throw inside.
  show-survives-throw = {
    expr = e.show { a = throw "boom"; b = [ 1 (throw "bang") ]; c.d = assert false; 1; };
    expected = "{ a = «error»; b = [ 1 «error» ]; c = { d = «error»; }; }";
  };
  show-big-set-is-bounded = {
    expr =
      let
        big = builtins.listToAttrs (builtins.genList (i: { name = "a${toString (10000 + i)}"; value = { x = i; y = [ i i ]; }; }) 20000);
        text = e.show big;
      in
      [ (builtins.stringLength text <= 1000) (builtins.match ".*20000 attributes.*" text != null) ];
    expected = [ true true ];
  };
  show-big-list-and-long-string-are-bounded = {
    expr =
      let
        long = builtins.concatStringsSep "" (builtins.genList (_: "x") 5000);
      in
      [
        (builtins.stringLength (e.show (builtins.genList (i: i) 100000)) <= 1000)
        (builtins.stringLength (e.show long) <= 1000)
        (builtins.match ".*100000 elements.*" (e.show (builtins.genList (i: i) 100000)) != null)
      ];
    expected = [ true true true ];
  };
}
