/**
  `forge.lib.errorReporter`: validate a value, collect every problem, fail once.

  A validator is a function from the value to a list of problems; a problem is
  `{ _type = "forge.problem"; severity = "error" | "warning"; path; message; suggestions; }`
  where `path` is the attribute path (a list of names) of the offending part. The helpers below
  each return such a list (empty when all is well), so checks compose with `++`.
  `report` then throws once, listing every error and warning, or returns the value (tracing the
  warnings, if any). The generated service Nix uses it so that a bad value shows every problem in
  one evaluation:

  ```
  forge.service: 2 errors:
    error: port: must be an integer, got a string: "80"
    error: replicas: must be at least 1, got 0
  ```
*/
{ lib }:
let
  inherit (builtins)
    all
    attrNames
    concatMap
    concatStringsSep
    elem
    filter
    isAttrs
    isList
    isString
    length
    map
    match
    replaceStrings
    typeOf
    ;
  inherit (lib.errors)
    describe
    show
    showAttrPath
    showChoices
    ;

  toPath = path: if isList path then path else [ path ];

  lowerCase =
    replaceStrings
      [ "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" ]
      [ "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" ];

  plural = n: word: "${toString n} ${word}${if n == 1 then "" else "s"}";

  indent = prefix: text: replaceStrings [ "\n" ] [ "\n${prefix}" ] text;

  reporter = rec {
    /**
      One problem, as a one-element list. `severity` is `"error"` (the default) or `"warning"`.

      # Inputs

      `args`
      : `{ path ? [ ], message, severity ? "error", suggestions ? [ ] }`; `path` is a list of
        attribute names or a single name

      # Type

      ```
      problem :: { path :: [String], message :: String, severity :: String, suggestions :: [String] } -> [Problem]
      ```

      # Examples
      :::{.example}
      ## `forge.lib.errorReporter.problem` usage example

      ```nix
      forge.lib.errorReporter.problem { path = [ "port" ]; message = "must be positive"; }
      => [ { _type = "forge.problem"; message = "must be positive"; path = [ "port" ]; severity = "error"; suggestions = [ ]; } ]
      ```
      :::
    */
    problem =
      {
        path ? [ ],
        message,
        severity ? "error",
        suggestions ? [ ],
      }:
      assert lib.errors.assertOneOf "forge.lib.errorReporter.problem" "severity" severity [
        "error"
        "warning"
      ];
      assert lib.errors.assertType "forge.lib.errorReporter.problem" "message" "string" message;
      [
        {
          _type = "forge.problem";
          path = toPath path;
          inherit message severity suggestions;
        }
      ];

    /**
      An error at `path`, as a one-element list.

      # Inputs

      `path`
      : attribute path (list of names, or one name)

      `message`
      : what is wrong

      # Type

      ```
      error :: [String] -> String -> [Problem]
      ```

      # Examples
      :::{.example}
      ## `forge.lib.errorReporter.error` usage example

      ```nix
      map (p: p.severity) (forge.lib.errorReporter.error [ "port" ] "must be positive")
      => [ "error" ]
      ```
      :::
    */
    error = path: message: problem { inherit path message; };

    /**
      A warning at `path`, as a one-element list. Warnings never fail `report` on their own.

      # Inputs

      `path`
      : attribute path (list of names, or one name)

      `message`
      : what is questionable

      # Type

      ```
      warning :: [String] -> String -> [Problem]
      ```

      # Examples
      :::{.example}
      ## `forge.lib.errorReporter.warning` usage example

      ```nix
      map (p: p.severity) (forge.lib.errorReporter.warning [ "endpoint" ] "uses plain HTTP")
      => [ "warning" ]
      ```
      :::
    */
    warning = path: message: problem {
      inherit path message;
      severity = "warning";
    };

    /**
      An error at `path` when `cond` is true; `[ ]` otherwise.

      # Inputs

      `cond`
      : whether the value is wrong

      `path`
      : attribute path

      `message`
      : what is wrong

      # Type

      ```
      errorIf :: Bool -> [String] -> String -> [Problem]
      ```

      # Examples
      :::{.example}
      ## `forge.lib.errorReporter.errorIf` usage example

      ```nix
      forge.lib.errorReporter.errorIf (8080 < 1) [ "port" ] "must be positive"
      => [ ]
      ```
      :::
    */
    errorIf =
      cond: path: message:
      if cond then error path message else [ ];

    /**
      A warning at `path` when `cond` is true; `[ ]` otherwise.

      # Inputs

      `cond`
      : whether the value is questionable

      `path`
      : attribute path

      `message`
      : what is questionable

      # Type

      ```
      warnIf :: Bool -> [String] -> String -> [Problem]
      ```

      # Examples
      :::{.example}
      ## `forge.lib.errorReporter.warnIf` usage example

      ```nix
      builtins.length (forge.lib.errorReporter.warnIf true [ "replicas" ] "a single replica has no redundancy")
      => 1
      ```
      :::
    */
    warnIf =
      cond: path: message:
      if cond then warning path message else [ ];

    /**
      Prefix the path of every problem with `path`, to reuse a validator on a nested value.

      # Inputs

      `path`
      : the attribute path of the nested value

      `problems`
      : problems whose paths are relative to that value

      # Type

      ```
      nest :: [String] -> [Problem] -> [Problem]
      ```

      # Examples
      :::{.example}
      ## `forge.lib.errorReporter.nest` usage example

      ```nix
      map (p: p.path) (forge.lib.errorReporter.nest [ "services" "api" ] (forge.lib.errorReporter.error [ "port" ] "bad"))
      => [ [ "services" "api" "port" ] ]
      ```
      :::
    */
    nest = path: problems: map (p: p // { path = toPath path ++ p.path; }) problems;

    /**
      Check the type of `value` (a `builtins.typeOf` name such as `"string"`, `"int"`, `"set"`,
      `"list"`, or a list of them).

      # Inputs

      `path`
      : attribute path of the value

      `type`
      : expected type name, or a list of accepted type names

      `value`
      : the value

      # Type

      ```
      checkType :: [String] -> (String | [String]) -> a -> [Problem]
      ```

      # Examples
      :::{.example}
      ## `forge.lib.errorReporter.checkType` usage example

      ```nix
      map (p: p.message) (forge.lib.errorReporter.checkType [ "port" ] "int" "80")
      => [ "must be an integer, got a string: \"80\"" ]
      ```
      :::
    */
    checkType =
      path: type: value:
      let
        types = if isList type then type else [ type ];
        names = {
          bool = "a Boolean";
          float = "a float";
          int = "an integer";
          lambda = "a function";
          list = "a list";
          null = "null";
          path = "a path";
          set = "an attribute set";
          string = "a string";
        };
        expected = concatStringsSep " or " (map (t: names.${t} or t) types);
      in
      errorIf (!(elem (typeOf value) types)) path "must be ${expected}, got ${describe value}: ${show value}";

    /**
      Check that `value` is one of `allowed`; the message lists every allowed value.

      # Inputs

      `path`
      : attribute path of the value

      `allowed`
      : the allowed values

      `value`
      : the value

      # Type

      ```
      checkOneOf :: [String] -> [a] -> a -> [Problem]
      ```

      # Examples
      :::{.example}
      ## `forge.lib.errorReporter.checkOneOf` usage example

      ```nix
      map (p: p.message) (forge.lib.errorReporter.checkOneOf [ "type" ] [ "rust" "go" ] "java")
      => [ "must be one of \"rust\" or \"go\", got \"java\"" ]
      ```
      :::
    */
    checkOneOf =
      path: allowed: value:
      errorIf (!(elem value allowed)) path "must be one of ${showChoices allowed}, got ${show value}";

    /**
      Check that `value` is a string matching the POSIX extended regular expression `regex`
      (the whole string must match, as with `builtins.match`). `description` says in words what
      is expected.

      # Inputs

      `path`
      : attribute path of the value

      `regex`
      : the regular expression

      `description`
      : what a valid value looks like, e.g. `"a DNS-1123 label"`

      `value`
      : the value

      # Type

      ```
      checkMatch :: [String] -> String -> String -> a -> [Problem]
      ```

      # Examples
      :::{.example}
      ## `forge.lib.errorReporter.checkMatch` usage example

      ```nix
      map (p: p.message) (forge.lib.errorReporter.checkMatch [ "name" ] "[a-z0-9-]+" "lowercase letters, digits and -" "My_App")
      => [ "must be lowercase letters, digits and -, got \"My_App\"" ]
      ```
      :::
    */
    checkMatch =
      path: regex: description: value:
      if !isString value then
        checkType path "string" value
      else
        errorIf (match regex value == null) path "must be ${description}, got ${show value}";

    /**
      Check an attribute set: it must be an attribute set, have every `required` name, and (when
      `optional` is not `null`) have no names outside `required ++ optional`. An unknown name that
      differs from a known one only in letter case gets a "did you mean" hint, any other unknown
      name a hint listing the known names. Each problem's path names the attribute itself.

      # Inputs

      `args`
      : `{ path ? [ ], value, required ? [ ], optional ? null }`

      # Type

      ```
      checkAttrs :: { path :: [String], value :: AttrSet, required :: [String], optional :: [String] | null } -> [Problem]
      ```

      # Examples
      :::{.example}
      ## `forge.lib.errorReporter.checkAttrs` usage example

      ```nix
      forge.lib.errorReporter.format "my.f" (forge.lib.errorReporter.checkAttrs { value = { name = "api"; Port = 80; }; required = [ "name" "port" ]; optional = [ "replicas" ]; })
      => "my.f: 2 errors:\n  error: port: required attribute is missing\n  error: Port: unknown attribute\n    hint: did you mean `port`?"
      ```
      :::
    */
    checkAttrs =
      {
        path ? [ ],
        value,
        required ? [ ],
        optional ? null,
      }:
      let
        p = toPath path;
        known = required ++ (if optional == null then [ ] else optional);
        names = attrNames value;
        missing = filter (n: !(value ? ${n})) required;
        unknown = if optional == null then [ ] else filter (n: !(elem n known)) names;
        sameCase = n: filter (k: lowerCase k == lowerCase n) known;
        unknownProblem =
          n:
          let
            close = sameCase n;
          in
          problem {
            path = p ++ [ n ];
            message = "unknown attribute";
            suggestions =
              if close != [ ] then
                [ "did you mean `${lib.errors.showAttrName (builtins.head close)}`?" ]
              else
                [ "known attributes: ${showChoices known}" ];
          };
      in
      if !isAttrs value then
        checkType p "set" value
      else
        concatMap (n: error (p ++ [ n ]) "required attribute is missing") missing
        ++ concatMap unknownProblem unknown;

    /**
      The errors among `problems`.

      # Inputs

      `problems`
      : a list of problems

      # Type

      ```
      errors :: [Problem] -> [Problem]
      ```

      # Examples
      :::{.example}
      ## `forge.lib.errorReporter.errors` usage example

      ```nix
      builtins.length (forge.lib.errorReporter.errors (forge.lib.errorReporter.error [ "a" ] "x" ++ forge.lib.errorReporter.warning [ "b" ] "y"))
      => 1
      ```
      :::
    */
    errors = filter (p: p.severity == "error");

    /**
      The warnings among `problems`.

      # Inputs

      `problems`
      : a list of problems

      # Type

      ```
      warnings :: [Problem] -> [Problem]
      ```

      # Examples
      :::{.example}
      ## `forge.lib.errorReporter.warnings` usage example

      ```nix
      builtins.length (forge.lib.errorReporter.warnings (forge.lib.errorReporter.error [ "a" ] "x"))
      => 0
      ```
      :::
    */
    warnings = filter (p: p.severity == "warning");

    /**
      Render problems as one message: a header `<where>: N errors, M warnings:` then one line per
      problem (errors first, each group in the order found) as `  <severity>: <path>: <message>`,
      with each suggestion on a `    hint:` line below it. `[ ]` renders as `<where>: no problems`.

      # Inputs

      `where`
      : the function path (or other name) of what is being validated

      `problems`
      : the problems

      # Type

      ```
      format :: String -> [Problem] -> String
      ```

      # Examples
      :::{.example}
      ## `forge.lib.errorReporter.format` usage example

      ```nix
      forge.lib.errorReporter.format "my.service" (forge.lib.errorReporter.warning [ "replicas" ] "only one" ++ forge.lib.errorReporter.error [ "port" ] "must be positive")
      => "my.service: 1 error, 1 warning:\n  error: port: must be positive\n  warning: replicas: only one"
      ```
      :::
    */
    format =
      where: problems:
      let
        errs = errors problems;
        warns = warnings problems;
        counts =
          if errs == [ ] then
            plural (length warns) "warning"
          else if warns == [ ] then
            plural (length errs) "error"
          else
            "${plural (length errs) "error"}, ${plural (length warns) "warning"}";
        line =
          p:
          concatStringsSep "\n" (
            [ "  ${p.severity}: ${showAttrPath p.path}: ${indent "    " p.message}" ]
            ++ map (s: "    hint: ${indent "      " s}") p.suggestions
          );
      in
      if problems == [ ] then
        "${where}: no problems"
      else
        concatStringsSep "\n" ([ "${where}: ${counts}:" ] ++ map line (errs ++ warns));

    /**
      Finish a validation: when `problems` holds any error, throw one message listing every
      problem (see `format`); otherwise trace the warnings, if any, and return `value`.

      # Inputs

      `args`
      : `{ where, value, problems }`

      # Type

      ```
      report :: { where :: String, value :: a, problems :: [Problem] } -> a
      ```

      # Examples
      :::{.example}
      ## `forge.lib.errorReporter.report` usage example

      ```nix
      forge.lib.errorReporter.report { where = "my.service"; value = { port = 80; }; problems = [ ]; }
      => { port = 80; }

      forge.lib.errorReporter.report { where = "my.service"; value = { }; problems = forge.lib.errorReporter.error [ "port" ] "missing" ++ forge.lib.errorReporter.error [ "name" ] "missing"; }
      => error: my.service: 2 errors:
      ```
      :::
    */
    report =
      {
        where,
        value,
        problems,
      }:
      if !(isList problems && all (p: (p._type or null) == "forge.problem") problems) then
        builtins.throw (
          "forge.lib.errorReporter.report: `problems` must be a list of problems "
          + "(from forge.lib.errorReporter.error, .warning, .check*), got ${show problems}"
        )
      else if errors problems != [ ] then
        builtins.throw (format where problems)
      else if problems != [ ] then
        builtins.trace "warning: ${format where problems}" value
      else
        value;

    /**
      Validate `value` with a list of validators (each `value -> [Problem]`) and `report` the
      result under the name `where`: returns `value`, or fails once listing every problem.

      # Inputs

      `where`
      : the function path (or other name) of what is being validated

      `validators`
      : functions from the value to a list of problems

      `value`
      : the value to validate

      # Type

      ```
      validate :: String -> [(a -> [Problem])] -> a -> a
      ```

      # Examples
      :::{.example}
      ## `forge.lib.errorReporter.validate` usage example

      ```nix
      forge.lib.errorReporter.validate "my.service" [ (v: forge.lib.errorReporter.checkType [ "port" ] "int" v.port) ] { port = 80; }
      => { port = 80; }

      forge.lib.errorReporter.validate "my.service" [ (v: forge.lib.errorReporter.checkType [ "port" ] "int" v.port) (v: forge.lib.errorReporter.checkType [ "name" ] "string" v.name) ] { port = "80"; name = 1; }
      => error: my.service: 2 errors:
        error: port: must be an integer, got a string: "80"
        error: name: must be a string, got an integer: 1
      ```
      :::
    */
    validate =
      where: validators: value:
      report {
        inherit where value;
        problems = concatMap (f: f value) validators;
      };
  };
in
reporter
