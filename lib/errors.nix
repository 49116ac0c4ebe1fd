/**
  `forge.lib.errors`: structured error values and the helpers that throw them.

  An error value is an attribute set `{ _type = "forge.error"; where; kind; message; context;
  suggestions; }`. `where` is the function path (`forge.lib.platform.toOci`), `kind` a short
  machine-readable tag (`unknown-system`), `context` an attribute set of the offending values and
  `suggestions` a list of things to try. `render` turns one into the text that `throw` raises:

  ```
  forge.lib.platform.toOci: unknown system "x86_64-windows" [unknown-system]
    system = "x86_64-windows"
    hint: use one of "aarch64-darwin", "aarch64-linux", …
  ```

  Every message starts with the function path, so a failure deep inside a consuming flake still
  says which Forge function refused which value.
*/
{ lib }:
let
  inherit (builtins)
    attrNames
    concatStringsSep
    elem
    genList
    isAttrs
    isList
    isString
    length
    map
    match
    replaceStrings
    typeOf
    ;

  # The words a bare attribute name may not be (nixpkgs `lib.strings.escapeNixIdentifier`).
  keywords = [ "assert" "else" "if" "in" "inherit" "let" "or" "rec" "then" "with" ];

  describeType = {
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

  # What `show` prints at most: list elements and attributes per level, characters of a string,
  # characters in all. A pkgs-sized set stays a short line.
  showItems = 8;
  showChars = 200;
  showTotal = 1000;

  # Whether forcing `value` (to weak head normal form) succeeds; a `throw` or a failed
  # `assert` inside a value shown in a message must not replace the message.
  forces = value: (builtins.tryEval (builtins.seq value true)).success;
  orError = value: f: if forces value then f value else "«error»";

  truncate =
    limit: text:
    if builtins.stringLength text <= limit then text else builtins.substring 0 (limit - 1) text + "…";

  firstItems = list: builtins.genList (builtins.elemAt list) (if length list < showItems then length list else showItems);

  more = n: noun: if n <= showItems then "" else " … (${toString n} ${noun})";

  # `show` with an explicit depth; levels below 0 are elided.
  showDepth = depth: value: orError value (showForced depth);

  showForced =
    depth: value:
    let
      type = typeOf value;
    in
    if type == "string" then
      truncate showChars (errors.escapeString value)
    else if type == "null" then
      "null"
    else if type == "bool" then
      (if value then "true" else "false")
    else if type == "int" || type == "float" then
      toString value
    else if type == "path" then
      toString value
    else if type == "lambda" then
      "«lambda»"
    else if type == "list" then
      (
        if value == [ ] then
          "[ ]"
        else if depth < 0 then
          "[ … ]"
        else
          "[ "
          + concatStringsSep " " (map (showDepth (depth - 1)) (firstItems value))
          + more (length value) "elements"
          + " ]"
      )
    else if type == "set" then
      (
        let
          names = attrNames value;
          kind = builtins.tryEval (value.type or null);
          name = builtins.tryEval (toString (value.name or "?"));
        in
        if kind.success && kind.value == "derivation" then
          "«derivation ${if name.success then name.value else "?"}»"
        else if names == [ ] then
          "{ }"
        else if depth < 0 then
          "{ … }"
        else
          "{ "
          + concatStringsSep " " (
            map (n: "${errors.showAttrName n} = ${showDepth (depth - 1) value.${n}};") (firstItems names)
          )
          + more (length names) "attributes"
          + " }"
      )
    else
      "«${type}»";

  indentLines = prefix: text: replaceStrings [ "\n" ] [ "\n${prefix}" ] text;

  errors = rec {
    /**
      Quote a string as a Nix string literal: `"` and `\` are escaped, every `$` becomes `\$` (so
      `${` can never start an interpolation), newline, carriage return and tab become `\n`, `\r`,
      `\t`; every other character passes through unchanged.

      # Inputs

      `s`
      : the string to quote

      # Type

      ```
      escapeString :: String -> String
      ```

      # Examples
      :::{.example}
      ## `forge.lib.errors.escapeString` usage example

      ```nix
      forge.lib.errors.escapeString "a \"b\" \${c}"
      => "\"a \\\"b\\\" \\\${c}\""
      ```
      :::
    */
    escapeString =
      s:
      "\""
      + replaceStrings [ "\\" "\"" "$" "\n" "\r" "\t" ] [ "\\\\" "\\\"" "\\$" "\\n" "\\r" "\\t" ] s
      + "\"";

    /**
      Render one attribute name as Nix source: bare when it is a valid identifier and not a
      keyword, quoted with `escapeString` otherwise.

      # Inputs

      `name`
      : the attribute name

      # Type

      ```
      showAttrName :: String -> String
      ```

      # Examples
      :::{.example}
      ## `forge.lib.errors.showAttrName` usage example

      ```nix
      forge.lib.errors.showAttrName "api"
      => "api"

      forge.lib.errors.showAttrName "if"
      => "\"if\""

      forge.lib.errors.showAttrName "deploy:api"
      => "\"deploy:api\""
      ```
      :::
    */
    showAttrName =
      name:
      if match "[a-zA-Z_][a-zA-Z0-9_'-]*" name != null && !(elem name keywords) then
        name
      else
        escapeString name;

    /**
      Render an attribute path (a list of names) as Nix source, each name through
      `showAttrName`. The empty path renders as `<root>`.

      # Inputs

      `path`
      : a list of attribute names

      # Type

      ```
      showAttrPath :: [String] -> String
      ```

      # Examples
      :::{.example}
      ## `forge.lib.errors.showAttrPath` usage example

      ```nix
      forge.lib.errors.showAttrPath [ "services" "in" "a.b" ]
      => "services.\"in\".\"a.b\""

      forge.lib.errors.showAttrPath [ ]
      => "<root>"
      ```
      :::
    */
    showAttrPath = path: if path == [ ] then "<root>" else concatStringsSep "." (map showAttrName path);

    /**
      Render any value as short, readable Nix-like text for an error message. Strings are quoted
      with `escapeString`; lists and attribute sets are shown three levels deep (deeper levels
      become `[ … ]` and `{ … }`), at most 8 elements or attributes per level (then the count);
      functions show as `«lambda»` and derivations as `«derivation NAME»`; a value that throws
      when forced shows as `«error»`. Never forces more of the value than it prints, and never
      more than 1000 characters long, so a `pkgs`-sized set stays a short line.

      # Inputs

      `value`
      : any Nix value

      # Type

      ```
      show :: Any -> String
      ```

      # Examples
      :::{.example}
      ## `forge.lib.errors.show` usage example

      ```nix
      forge.lib.errors.show { port = "80"; tags = [ 1 null ]; }
      => "{ port = \"80\"; tags = [ 1 null ]; }"

      forge.lib.errors.show { a = { b = { c = { d = 1; }; }; }; }
      => "{ a = { b = { c = { … }; }; }; }"

      forge.lib.errors.show { a = throw "x"; b = builtins.genList (i: i) 100; }
      => "{ a = «error»; b = [ 0 1 2 3 4 5 6 7 … (100 elements) ]; }"
      ```
      :::
    */
    show = value: truncate showTotal (showDepth 2 value);

    /**
      Describe the type of a value in words, for messages such as "expected a string, got an
      integer".

      # Inputs

      `value`
      : any Nix value

      # Type

      ```
      describe :: Any -> String
      ```

      # Examples
      :::{.example}
      ## `forge.lib.errors.describe` usage example

      ```nix
      forge.lib.errors.describe 80
      => "an integer"

      forge.lib.errors.describe { }
      => "an attribute set"
      ```
      :::
    */
    describe = value: describeType.${typeOf value} or "a ${typeOf value}";

    /**
      Render a list of strings as a readable, quoted alternative list: `"a", "b" or "c"`.

      # Inputs

      `values`
      : a list of strings

      # Type

      ```
      showChoices :: [String] -> String
      ```

      # Examples
      :::{.example}
      ## `forge.lib.errors.showChoices` usage example

      ```nix
      forge.lib.errors.showChoices [ "amd64" "arm64" "386" ]
      => "\"amd64\", \"arm64\" or \"386\""

      forge.lib.errors.showChoices [ ]
      => "(none)"
      ```
      :::
    */
    showChoices =
      values:
      let
        quoted = map show values;
        n = length quoted;
      in
      if n == 0 then
        "(none)"
      else if n == 1 then
        builtins.head quoted
      else
        concatStringsSep ", " (genList (i: builtins.elemAt quoted i) (n - 1))
        + " or "
        + builtins.elemAt quoted (n - 1);

    /**
      Build a structured error value. `where` is the function path, `kind` a short tag, `message`
      one line saying what is wrong, `context` the offending values by name, `suggestions` what to
      do instead (each a line of text, often a correct call).

      # Inputs

      `args`
      : `{ where, kind, message, context ? { }, suggestions ? [ ] }`

      # Type

      ```
      mkError :: { where :: String, kind :: String, message :: String, context :: AttrSet, suggestions :: [String] } -> Error
      ```

      # Examples
      :::{.example}
      ## `forge.lib.errors.mkError` usage example

      ```nix
      forge.lib.errors.mkError { where = "my.f"; kind = "bad-port"; message = "port out of range"; context.port = 0; }
      => { _type = "forge.error"; context = { port = 0; }; kind = "bad-port"; message = "port out of range"; suggestions = [ ]; where = "my.f"; }
      ```
      :::
    */
    mkError =
      args@{
        where,
        kind,
        message,
        context ? { },
        suggestions ? [ ],
      }:
      let
        bad =
          name: expected: value:
          builtins.throw (
            "forge.lib.errors.mkError: `${name}` must be ${expected}, got ${describe value}: ${show value}; "
            + "for example forge.lib.errors.mkError { where = \"my.f\"; kind = \"bad-port\"; message = \"port out of range\"; context.port = 0; }"
          );
      in
      if !isString where then
        bad "where" "a string" where
      else if !isString kind then
        bad "kind" "a string" kind
      else if !isString message then
        bad "message" "a string" message
      else if !isAttrs context then
        bad "context" "an attribute set" context
      else if !isList suggestions then
        bad "suggestions" "a list of strings" suggestions
      else
        {
          _type = "forge.error";
          inherit
            where
            kind
            message
            context
            suggestions
            ;
        };

    /**
      Whether a value is an error built by `mkError`.

      # Inputs

      `value`
      : any value

      # Type

      ```
      isError :: Any -> Bool
      ```

      # Examples
      :::{.example}
      ## `forge.lib.errors.isError` usage example

      ```nix
      forge.lib.errors.isError (forge.lib.errors.mkError { where = "f"; kind = "k"; message = "m"; })
      => true

      forge.lib.errors.isError { kind = "k"; }
      => false
      ```
      :::
    */
    isError = value: isAttrs value && (value._type or null) == "forge.error";

    /**
      Render an error value as text: the first line is `<where>: <message> [<kind>]`; each context
      entry follows on its own line as `  name = value`, then each suggestion as `  hint: …`.
      Multi-line messages and suggestions stay indented under their line.

      # Inputs

      `err`
      : an error value from `mkError`

      # Type

      ```
      render :: Error -> String
      ```

      # Examples
      :::{.example}
      ## `forge.lib.errors.render` usage example

      ```nix
      forge.lib.errors.render (forge.lib.errors.mkError { where = "my.f"; kind = "bad-port"; message = "port out of range"; context.port = 0; suggestions = [ "my.f { port = 8080; }" ]; })
      => "my.f: port out of range [bad-port]\n  port = 0\n  hint: my.f { port = 8080; }"
      ```
      :::
    */
    render =
      err:
      let
        e = if isError err then err else mkError err;
        contextLines = map (n: "  ${showAttrName n} = ${indentLines "    " (show e.context.${n})}") (
          attrNames e.context
        );
        hintLines = map (s: "  hint: ${indentLines "    " s}") e.suggestions;
      in
      concatStringsSep "\n" (
        [ "${e.where}: ${indentLines "  " e.message} [${e.kind}]" ] ++ contextLines ++ hintLines
      );

    /**
      Throw an error: either an error value from `mkError` or the attribute set `mkError` takes.
      The thrown message is `render err`.

      # Inputs

      `err`
      : an error value, or `{ where, kind, message, context ? { }, suggestions ? [ ] }`

      # Type

      ```
      throw :: (Error | AttrSet) -> a
      ```

      # Examples
      :::{.example}
      ## `forge.lib.errors.throw` usage example

      ```nix
      forge.lib.errors.throw { where = "my.f"; kind = "bad-port"; message = "port out of range"; context.port = 0; }
      => error: my.f: port out of range [bad-port]
      ```
      :::
    */
    throw = err: builtins.throw (render err);

    /**
      `assert`-style check that names the function path: returns `true` when `pred` holds,
      otherwise throws `"<where>: <message>"`. Use as `assert forge.lib.errors.assertMsg … ; body`.

      # Inputs

      `where`
      : the function path of the caller, e.g. `"forge.lib.attic.substituter"`

      `pred`
      : the condition that must hold

      `message`
      : what is wrong when it does not

      # Type

      ```
      assertMsg :: String -> Bool -> String -> Bool
      ```

      # Examples
      :::{.example}
      ## `forge.lib.errors.assertMsg` usage example

      ```nix
      forge.lib.errors.assertMsg "my.f" (1 < 2) "never shown"
      => true

      forge.lib.errors.assertMsg "my.f" false "port must be positive"
      => error: my.f: port must be positive
      ```
      :::
    */
    assertMsg = where: pred: message: pred || builtins.throw "${where}: ${message}";

    /**
      `assert`-style check that `value` is one of `allowed`; the error names the function path,
      the argument, the offending value and every allowed value.

      # Inputs

      `where`
      : the function path of the caller

      `name`
      : the name of the argument being checked

      `value`
      : the value to check

      `allowed`
      : the allowed values

      # Type

      ```
      assertOneOf :: String -> String -> a -> [a] -> Bool
      ```

      # Examples
      :::{.example}
      ## `forge.lib.errors.assertOneOf` usage example

      ```nix
      forge.lib.errors.assertOneOf "my.f" "os" "linux" [ "linux" "darwin" ]
      => true

      forge.lib.errors.assertOneOf "my.f" "os" "windows" [ "linux" "darwin" ]
      => error: my.f: `os` must be one of "linux" or "darwin", got "windows"
      ```
      :::
    */
    assertOneOf =
      where: name: value: allowed:
      elem value allowed
      || builtins.throw "${where}: `${name}` must be one of ${showChoices allowed}, got ${show value}";

    /**
      `assert`-style type check. `type` is a `builtins.typeOf` name (`"string"`, `"int"`, `"set"`,
      `"list"`, `"bool"`, `"lambda"`, `"path"`, `"null"`, `"float"`) or a list of them.

      # Inputs

      `where`
      : the function path of the caller

      `name`
      : the name of the argument being checked

      `type`
      : the expected type name, or a list of accepted type names

      `value`
      : the value to check

      # Type

      ```
      assertType :: String -> String -> (String | [String]) -> a -> Bool
      ```

      # Examples
      :::{.example}
      ## `forge.lib.errors.assertType` usage example

      ```nix
      forge.lib.errors.assertType "my.f" "port" "int" 80
      => true

      forge.lib.errors.assertType "my.f" "port" "int" "80"
      => error: my.f: `port` must be an integer, got a string: "80"
      ```
      :::
    */
    assertType =
      where: name: type: value:
      let
        types = if isList type then type else [ type ];
        expected = concatStringsSep " or " (map (t: describeType.${t} or t) types);
      in
      elem (typeOf value) types
      || builtins.throw "${where}: `${name}` must be ${expected}, got ${describe value}: ${show value}";
  };
in
errors
