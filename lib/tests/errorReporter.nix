# Cases for forge.lib.errorReporter. Each is { expr; expected; }.
{ lib, fails }:
let
  r = lib.errorReporter;
  messages = map (p: p.message);
  paths = map (p: p.path);
  portIsInt = v: r.checkType [ "port" ] "int" (v.port or null);
  nameIsString = v: r.checkType [ "name" ] "string" (v.name or null);
in
{
  problem-defaults = {
    expr = r.problem { message = "m"; };
    expected = [
      {
        _type = "forge.problem";
        path = [ ];
        message = "m";
        severity = "error";
        suggestions = [ ];
      }
    ];
  };
  problem-string-path = {
    expr = paths (r.problem {
      path = "port";
      message = "m";
    });
    expected = [ [ "port" ] ];
  };
  problem-bad-severity = {
    expr = fails (r.problem {
      message = "m";
      severity = "fatal";
    });
    expected = true;
  };
  problem-bad-message = {
    expr = fails (r.problem { message = 1; });
    expected = true;
  };
  error-and-warning-severity = {
    expr = map (p: p.severity) (r.error [ "a" ] "x" ++ r.warning [ "b" ] "y");
    expected = [ "error" "warning" ];
  };
  errorIf-both-branches = {
    expr = [
      (r.errorIf false [ "a" ] "x")
      (messages (r.errorIf true [ "a" ] "x"))
    ];
    expected = [ [ ] [ "x" ] ];
  };
  warnIf-both-branches = {
    expr = [
      (r.warnIf false [ "a" ] "x")
      (map (p: p.severity) (r.warnIf true [ "a" ] "x"))
    ];
    expected = [ [ ] [ "warning" ] ];
  };
  nest-prefixes = {
    expr = paths (r.nest [ "services" "if" ] (r.error [ "port" ] "x" ++ r.error [ ] "y"));
    expected = [
      [ "services" "if" "port" ]
      [ "services" "if" ]
    ];
  };
  nest-empty = {
    expr = r.nest [ "a" ] [ ];
    expected = [ ];
  };

  checkType-ok = {
    expr = r.checkType [ "port" ] "int" 80;
    expected = [ ];
  };
  checkType-alternatives = {
    expr = messages (r.checkType [ "x" ] [ "string" "null" ] 1);
    expected = [ "must be a string or null, got an integer: 1" ];
  };
  checkType-shows-interpolation-safely = {
    expr = messages (r.checkType [ "x" ] "int" "\${oops}");
    expected = [ "must be an integer, got a string: \"\\\${oops}\"" ];
  };
  checkOneOf-ok = {
    expr = r.checkOneOf [ "t" ] [ "go" "rust" ] "go";
    expected = [ ];
  };
  checkOneOf-bad = {
    expr = messages (r.checkOneOf [ "t" ] [ "go" "rust" ] "java");
    expected = [ "must be one of \"go\" or \"rust\", got \"java\"" ];
  };
  checkOneOf-empty-allowed = {
    expr = messages (r.checkOneOf [ "t" ] [ ] "x");
    expected = [ "must be one of (none), got \"x\"" ];
  };
  checkMatch-ok = {
    expr = r.checkMatch [ "n" ] "[a-z]+" "letters" "abc";
    expected = [ ];
  };
  checkMatch-no-match = {
    expr = messages (r.checkMatch [ "n" ] "[a-z]+" "letters" "ab1");
    expected = [ "must be letters, got \"ab1\"" ];
  };
  checkMatch-empty-string = {
    expr = messages (r.checkMatch [ "n" ] "[a-z]+" "letters" "");
    expected = [ "must be letters, got \"\"" ];
  };
  checkMatch-not-string = {
    expr = messages (r.checkMatch [ "n" ] "[a-z]+" "letters" 5);
    expected = [ "must be a string, got an integer: 5" ];
  };

  checkAttrs-ok = {
    expr = r.checkAttrs {
      value = {
        name = "a";
        port = 1;
      };
      required = [ "name" ];
      optional = [ "port" ];
    };
    expected = [ ];
  };
  checkAttrs-empty = {
    expr = r.checkAttrs { value = { }; };
    expected = [ ];
  };
  checkAttrs-open-allows-unknown = {
    expr = r.checkAttrs {
      value = {
        anything = 1;
      };
    };
    expected = [ ];
  };
  checkAttrs-not-a-set = {
    expr = messages (r.checkAttrs {
      path = [ "svc" ];
      value = [ ];
    });
    expected = [ "must be an attribute set, got a list: [ ]" ];
  };
  checkAttrs-missing-unknown-case = {
    expr = map (p: {
      inherit (p) path message suggestions;
    }) (r.checkAttrs {
      path = [ "svc" ];
      value = {
        Port = 1;
        "if" = 2;
      };
      required = [ "name" "port" ];
      optional = [ ];
    });
    expected = [
      {
        path = [ "svc" "name" ];
        message = "required attribute is missing";
        suggestions = [ ];
      }
      {
        path = [ "svc" "port" ];
        message = "required attribute is missing";
        suggestions = [ ];
      }
      {
        path = [ "svc" "Port" ];
        message = "unknown attribute";
        suggestions = [ "did you mean `port`?" ];
      }
      {
        path = [ "svc" "if" ];
        message = "unknown attribute";
        suggestions = [ "known attributes: \"name\" or \"port\"" ];
      }
    ];
  };

  errors-and-warnings-filters = {
    expr =
      let
        ps = r.warning [ "w" ] "w" ++ r.error [ "e" ] "e";
      in
      [
        (messages (r.errors ps))
        (messages (r.warnings ps))
        (r.errors [ ])
      ];
    expected = [ [ "e" ] [ "w" ] [ ] ];
  };

  format-none = {
    expr = r.format "my.f" [ ];
    expected = "my.f: no problems";
  };
  format-errors-only = {
    expr = r.format "my.f" (r.error [ "a" ] "x" ++ r.error [ "in" ] "y");
    expected = "my.f: 2 errors:\n  error: a: x\n  error: \"in\": y";
  };
  format-warnings-only = {
    expr = r.format "my.f" (r.warning [ ] "w");
    expected = "my.f: 1 warning:\n  warning: <root>: w";
  };
  format-mixed-errors-first = {
    expr = r.format "my.f" (
      r.warning [ "w" ] "careful"
      ++ r.problem {
        path = [ "e" ];
        message = "two\nlines";
        suggestions = [ "do this" ];
      }
    );
    expected = "my.f: 1 error, 1 warning:\n  error: e: two\n    lines\n    hint: do this\n  warning: w: careful";
  };

  report-clean = {
    expr = r.report {
      where = "f";
      value = 42;
      problems = [ ];
    };
    expected = 42;
  };
  report-warnings-return-value = {
    expr = r.report {
      where = "f";
      value = "v";
      problems = r.warning [ "a" ] "w";
    };
    expected = "v";
  };
  report-errors-fail = {
    expr = fails (r.report {
      where = "f";
      value = "v";
      problems = r.warning [ "a" ] "w" ++ r.error [ "b" ] "e";
    });
    expected = true;
  };
  report-rejects-non-problems = {
    expr = map fails [
      (r.report {
        where = "f";
        value = 1;
        problems = [ "oops" ];
      })
      (r.report {
        where = "f";
        value = 1;
        problems = r.error [ ] "e" ++ [ { message = "hand-made"; } ];
      })
      (r.report {
        where = "f";
        value = 1;
        problems = { };
      })
    ];
    expected = [ true true true ];
  };

  validate-ok = {
    expr = r.validate "svc" [ portIsInt nameIsString ] {
      port = 1;
      name = "a";
    };
    expected = {
      port = 1;
      name = "a";
    };
  };
  validate-no-validators = {
    expr = r.validate "svc" [ ] null;
    expected = null;
  };
  validate-collects-all = {
    # The same validators, run without `report`, see both problems at once.
    expr = paths (builtins.concatMap (f: f { port = "80"; }) [ portIsInt nameIsString ]);
    expected = [ [ "port" ] [ "name" ] ];
  };
  validate-fails = {
    expr = fails (r.validate "svc" [ portIsInt nameIsString ] { port = "80"; });
    expected = true;
  };
}
