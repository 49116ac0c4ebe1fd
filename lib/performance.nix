/**
  `forge.lib.performance`: closure-size budgets.

  `closureSizeCheck` is a check derivation that fails when the runtime closure of a derivation
  (everything a deployment of it copies) is larger than a byte budget, and lists the largest
  store paths so you know what to cut.

  How it measures: Nix's `exportReferencesGraph` hands the builder the list of every path in the
  closure (and makes them available inside a sandbox); the builder adds up `du -s -b` of each
  path. That is the apparent size of the files, which tracks the NAR size Nix reports
  (`nix path-info -S`) to within directory and padding overhead; it needs only coreutils, which
  `pkgs.runCommand` provides. Sizes cannot be known at evaluation time without building (and
  import-from-derivation would break pure, build-free `nix flake show`), so the budget is
  enforced at build time: the check costs one small build, never a download.

  Images: pass the image derivation. For a `dockerTools.buildImage`/`buildLayeredImage` tarball
  the closure is the tarball (the compressed size pushed to a registry); for
  `streamLayeredImage` or nix2container images it is the image contents, i.e. the uncompressed
  size of what the layers hold.
*/
{ lib }:
let
  inherit (builtins)
    concatStringsSep
    elem
    fromJSON
    head
    isAttrs
    isInt
    isString
    match
    ;
  inherit (lib.errors) show describe;

  units = {
    B = 1;
    kB = 1000;
    KB = 1000;
    MB = 1000 * 1000;
    GB = 1000 * 1000 * 1000;
    TB = 1000 * 1000 * 1000 * 1000;
    KiB = 1024;
    MiB = 1024 * 1024;
    GiB = 1024 * 1024 * 1024;
    TiB = 1024 * 1024 * 1024 * 1024;
  };
  unitNames = [ "B" "kB" "KB" "MB" "GB" "TB" "KiB" "MiB" "GiB" "TiB" ];
  # The largest budget (1024 TiB): far beyond any closure, far below 64-bit overflow.
  maxBytes = 1024 * units.TiB;

  # `digits` (at most 6) after the decimal point, times `perUnit`, rounded down: exact integer
  # arithmetic (10^6 * 1 TiB fits in 64 bits), so "1.1 GB" is 1100000000, not one byte less.
  fractionBytes =
    digits: perUnit:
    let
      chars = builtins.genList (i: builtins.substring i 1 digits) (builtins.stringLength digits);
      numerator = builtins.foldl' (n: c: n * 10 + fromJSON c) 0 chars;
      denominator = builtins.foldl' (n: _: n * 10) 1 chars;
    in
    numerator * perUnit / denominator;

  parseSizeAt =
    where: size:
    let
      fail =
        msg:
        lib.errors.throw {
          inherit where;
          kind = "bad-size";
          message = msg;
          context = { inherit size; };
          suggestions = [
            "a size is a number of bytes (524288000) or a string such as \"500 MiB\", \"1.5 GB\"; units: ${lib.errors.showChoices unitNames}"
          ];
        };
      m = match "[[:space:]]*(0|[1-9][0-9]{0,15})(\\.[0-9]{1,6})?[[:space:]]*([A-Za-z]*)[[:space:]]*" size;
      whole = fromJSON (head m);
      fraction = builtins.elemAt m 1;
      unit = builtins.elemAt m 2;
      perUnit = units.${if unit == "" then "B" else unit};
      # Compared before multiplying, so nothing can overflow.
      tooBig = whole > maxBytes / perUnit || (whole == maxBytes / perUnit && fraction != null && match "[.]0*" fraction == null);
      tooBigMessage = "${show size} is over the largest budget, ${toString maxBytes} bytes (1024 TiB)";
    in
    if isInt size then
      (if size < 0 then fail "a size cannot be negative, got ${toString size}"
       else if size > maxBytes then fail tooBigMessage
       else size)
    else if !isString size then
      fail "expected a number of bytes or a string such as \"500 MiB\", got ${describe size}: ${show size}"
    else if m == null then
      fail (if match "[[:space:]]*[0-9]{17,}.*" size != null then tooBigMessage else "cannot read ${show size} as a size")
    else if unit != "" && !(elem unit unitNames) then
      fail "unknown unit ${show unit} in ${show size}"
    else if tooBig then
      fail tooBigMessage
    else
      whole * perUnit + (if fraction == null then 0 else fractionBytes (builtins.substring 1 6 fraction) perUnit);

  performance = {
    /**
      A size in bytes from a number of bytes or a string with an optional unit: decimal units
      `kB`/`KB`, `MB`, `GB`, `TB` (powers of 1000) and binary units `KiB`, `MiB`, `GiB`, `TiB`
      (powers of 1024). Fractions are rounded down to whole bytes. At most 1024 TiB: a larger
      size is refused (it would overflow Nix's 64-bit integers).

      # Inputs

      `size`
      : an integer, or a string such as `"500 MiB"`

      # Type

      ```
      parseSize :: (Int | String) -> Int
      ```

      # Examples
      :::{.example}
      ## `forge.lib.performance.parseSize` usage example

      ```nix
      map forge.lib.performance.parseSize [ 1000 "500 MiB" "1.5GB" "12" ]
      => [ 1000 524288000 1500000000 12 ]

      forge.lib.performance.parseSize "5 megabytes"
      => error: forge.lib.performance.parseSize: unknown unit "megabytes" in "5 megabytes" [bad-size]

      forge.lib.performance.parseSize "10000000 TiB"
      => error: forge.lib.performance.parseSize: "10000000 TiB" is over the largest budget, 1125899906842624 bytes (1024 TiB) [bad-size]
      ```
      :::
    */
    parseSize = parseSizeAt "forge.lib.performance.parseSize";

    /**
      A byte count in binary units with one decimal (rounded down), for messages.

      # Inputs

      `bytes`
      : a non-negative integer

      # Type

      ```
      formatBytes :: Int -> String
      ```

      # Examples
      :::{.example}
      ## `forge.lib.performance.formatBytes` usage example

      ```nix
      map forge.lib.performance.formatBytes [ 0 1023 1536 524288000 ]
      => [ "0 B" "1023 B" "1.5 KiB" "500.0 MiB" ]
      ```
      :::
    */
    formatBytes =
      bytes:
      let
        pick =
          if bytes >= units.TiB then
            [ units.TiB "TiB" ]
          else if bytes >= units.GiB then
            [ units.GiB "GiB" ]
          else if bytes >= units.MiB then
            [ units.MiB "MiB" ]
          else if bytes >= units.KiB then
            [ units.KiB "KiB" ]
          else
            [ 1 "B" ];
        unit = head pick;
        tenths = bytes * 10 / unit;
      in
      assert lib.errors.assertMsg "forge.lib.performance.formatBytes" (isInt bytes && bytes >= 0)
        "expected a non-negative integer, got ${show bytes}";
      if unit == 1 then
        "${toString bytes} B"
      else
        "${toString (tenths / 10)}.${toString (tenths - tenths / 10 * 10)} ${builtins.elemAt pick 1}";

    /**
      A check derivation that fails when the runtime closure of `drv` is larger than `maxBytes`,
      printing the total, the budget and the `top` largest paths; when within budget it succeeds
      and its output is the same report. Builds with `pkgs.runCommand` (real nixpkgs, or any
      attribute set providing a compatible `runCommand` whose builder has `du`, `sort`, `head`
      and `awk`).

      # Inputs

      `args`
      : `{ pkgs, drv, maxBytes, top ? 10, name ? "closure-size-<drv name>" }`; `drv` is a
        derivation or store path (an image works too); `maxBytes` anything `parseSize` accepts

      # Type

      ```
      closureSizeCheck :: { pkgs :: AttrSet, drv :: Derivation, maxBytes :: Int | String, top :: Int, name :: String } -> Derivation
      ```

      # Examples
      :::{.example}
      ## `forge.lib.performance.closureSizeCheck` usage example

      ```nix
      (forge.lib.performance.closureSizeCheck { inherit pkgs; drv = pkgs.hello; maxBytes = "50 MiB"; }).name
      => "closure-size-hello"

      forge.lib.performance.closureSizeCheck { inherit pkgs; drv = pkgs.hello; maxBytes = "lots"; }
      => error: forge.lib.performance.closureSizeCheck: cannot read "lots" as a size [bad-size]
      ```
      :::
    */
    closureSizeCheck =
      {
        pkgs,
        drv,
        maxBytes,
        top ? 10,
        name ? null,
      }:
      let
        where = "forge.lib.performance.closureSizeCheck";
        budget = parseSizeAt where maxBytes;
        drvName =
          if isAttrs drv && drv ? name then
            drv.name
          else
            let
              base = builtins.unsafeDiscardStringContext (baseNameOf (toString drv));
              m = match "[0-9a-z]{32}-(.*)" base;
            in
            if m == null then base else head m;
        checkName = if name == null then "closure-size-${drvName}" else name;
      in
      assert lib.errors.assertMsg where (isAttrs pkgs && pkgs ? runCommand)
        "`pkgs` must provide `runCommand`; pass nixpkgs.legacyPackages.\${system}";
      assert lib.errors.assertMsg where ((isAttrs drv && drv ? outPath) || isString drv)
        "`drv` must be a derivation or a store path, got ${describe drv}: ${show drv}";
      assert lib.errors.assertMsg where (isInt top && top > 0) "`top` must be a positive integer, got ${show top}";
      assert lib.errors.assertType where "name" [ "null" "string" ] name;
      pkgs.runCommand checkName {
        exportReferencesGraph = [
          "closure-graph"
          drv
        ];
        target = "${drv}";
        inherit budget top where;
        budgetText = performance.formatBytes budget;
      } ''
        # closure-graph: for each path, the path, its deriver, the number of references, and
        # that many reference lines.
        human() {
          awk -v b="$1" 'BEGIN {
            split("B KiB MiB GiB TiB", unit, " "); i = 1
            while (b >= 1024 && i < 5) { b = b / 1024; i++ }
            if (i == 1) printf "%d B", b; else printf "%.1f %s", b, unit[i]
          }'
        }
        total=0
        count=0
        : > sizes
        while read -r path; do
          read -r deriver
          read -r nrefs
          i=0
          while [ "$i" -lt "$nrefs" ]; do read -r ref; i=$((i + 1)); done
          size=$(du -s -b "$path" | cut -f1)
          total=$((total + size))
          count=$((count + 1))
          printf '%s %s\n' "$size" "$path" >> sizes
        done < closure-graph
        {
          if [ "$count" -eq 1 ]; then paths="1 path"; else paths="$count paths"; fi
          printf 'closure of %s: %s bytes (%s) in %s; budget %s bytes (%s)\n' \
            "$target" "$total" "$(human "$total")" "$paths" "$budget" "$budgetText"
          printf 'largest paths:\n'
          sort -n -r sizes > sorted
          head -n "$top" sorted | while read -r size path; do
            printf '  %12s  %s  %s\n' "$size" "$(human "$size")" "$path"
          done
        } > report
        if [ "$total" -gt "$budget" ]; then
          {
            printf '%s: runtime closure of %s is over budget by %s bytes\n' \
              "$where" "$target" "$((total - budget))"
            cat report
            printf 'hint: remove what the largest paths pull in, or raise maxBytes\n'
          } >&2
          exit 1
        fi
        cp report "$out"
      '';
  };
in
performance
