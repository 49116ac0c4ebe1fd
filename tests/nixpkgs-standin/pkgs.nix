# The stand-in package set for one system. See flake.nix: this is not nixpkgs.
{ system }:
let
  sh = "/bin/sh";
  binPath = pkgs: builtins.concatStringsSep ":" (map (p: "${p}/bin") pkgs);

  # A package whose bin/NAME is the host's NAME (found at build time), or a script that says
  # the tool is not on this machine.
  hostTool = name: derivation {
    inherit system;
    name = "standin-${name}";
    builder = sh;
    toolName = name;
    args = [ "-c" ''
      set -e
      /bin/mkdir -p "$out/bin"
      for dir in /usr/local/bin /usr/bin /bin /root/.cargo/bin /usr/local/go/bin /usr/lib/go/bin; do
        if [ -x "$dir/$toolName" ]; then
          /bin/ln -s "$dir/$toolName" "$out/bin/$toolName"
          exit 0
        fi
      done
      printf '#!/bin/sh\necho "%s: not installed on this machine (nixpkgs stand-in)" >&2\nexit 127\n' "$toolName" > "$out/bin/$toolName"
      /bin/chmod +x "$out/bin/$toolName"
    '' ];
  };

  # Quote for the shell (what nixpkgs' lib.escapeShellArg does for non-trivial strings).
  quote = s: "'" + builtins.replaceStrings [ "'" ] [ "'\\''" ] s + "'";

  # writeShellApplication as nixpkgs writes and checks it (trivial-builders: the script text
  # byte for byte, then `bash -n -O extglob` and ShellCheck on it, with excludeShellChecks and
  # extraShellCheckFlags). ShellCheck is the host's (Debian package `shellcheck`); without it
  # the build fails, as it would not be the check nixpkgs makes.
  writeShellApplication =
    { name, text, runtimeInputs ? [ ], excludeShellChecks ? [ ], extraShellCheckFlags ? [ ]
    , bashOptions ? [ "errexit" "nounset" "pipefail" ], ... }:
    let
      script = "#!/bin/bash\n"
        + builtins.concatStringsSep "\n" (map (o: "set -o ${o}") bashOptions) + "\n"
        + (if runtimeInputs == [ ] then "" else "\nexport PATH=\"${binPath runtimeInputs}:$PATH\"\n")
        + "\n" + text + "\n";
      excludeFlags = if excludeShellChecks == [ ] then [ ] else [ "--exclude" (builtins.concatStringsSep "," excludeShellChecks) ];
      flags = builtins.concatStringsSep " " (map quote (excludeFlags ++ extraShellCheckFlags));
    in
    derivation {
      inherit system name script;
      builder = sh;
      passAsFile = [ "script" ];
      args = [ "-c" ''
        set -e
        /bin/mkdir -p "$out/bin"
        target="$out/bin/$name"
        /bin/cat "$scriptPath" > "$target"
        /bin/chmod +x "$target"
        /bin/bash -n -O extglob "$target"
        shellcheck=
        for dir in /usr/local/bin /usr/bin /bin; do
          if [ -x "$dir/shellcheck" ]; then shellcheck="$dir/shellcheck"; break; fi
        done
        if [ -z "$shellcheck" ]; then
          echo "nixpkgs stand-in: shellcheck is not installed; writeShellApplication runs it (apt-get install shellcheck, or bash .ci/setup)" >&2
          exit 1
        fi
        "$shellcheck" ${flags} "$target"
      '' ];
    };

  # runCommand name env script: like nixpkgs' (bash, with the host's coreutils/awk on PATH).
  runCommand = name: env: script: derivation ({
    inherit system name;
    builder = "/bin/sh";
    args = [ "-euc" script ];
    PATH = "/usr/local/bin:/usr/bin:/bin";
  } // builtins.removeAttrs env [ "nativeBuildInputs" "buildInputs" "meta" "passthru" ]);

  writeText = name: text: derivation {
    inherit system name text;
    builder = sh;
    args = [ "-c" "printf '%s' \"$text\" > \"$out\"" ];
  };

  # buildPythonApplication: console scripts from pyproject.toml, run by the host's python3 (the
  # first on PATH at run time, so tests get their virtualenv's dependencies) with PYTHONPATH set
  # to the source in the store. Dependencies listed by the caller are ignored.
  buildPythonApplication = { pname, version ? "0", src, ... }:
    let
      project = (builtins.fromTOML (builtins.readFile (src + "/pyproject.toml"))).project;
      scripts = project.scripts or { };
      wrapper = name: target:
        let
          parts = builtins.filter builtins.isString (builtins.split ":" target);
          module = builtins.elemAt parts 0;
          func = builtins.elemAt parts 1;
        in
        ''
          /bin/cat > "$out/bin/${name}" <<'FORGE_STANDIN_WRAPPER'
          #!/bin/sh
          export PYTHONPATH="@src@''${PYTHONPATH:+:$PYTHONPATH}"
          exec python3 -c 'import sys; sys.argv[0] = "${name}"; from ${module} import ${func} as main; sys.exit(main())' "$@"
          FORGE_STANDIN_WRAPPER
          /bin/sed -i "s|@src@|$src|" "$out/bin/${name}"
          /bin/chmod +x "$out/bin/${name}"
        '';
    in
    derivation {
      inherit system src;
      name = "${pname}-${version}";
      builder = sh;
      args = [ "-c" (''
        set -e
        /bin/mkdir -p "$out/bin"
      '' + builtins.concatStringsSep "\n" (builtins.attrValues (builtins.mapAttrs wrapper scripts))) ];
    };

  # A host tool found where a build (user nixbld, no access to /root) can run it: the first of
  # `dirs` holding an executable NAME, as an absolute path string ("" when none).
  hostPaths = {
    # Debian's cargo/rustc (apt packages `cargo rustc`): rustup's under /root is not readable by
    # the build users. Go from its official tarball or Debian's golang.
    cargo = [ "/usr/bin" "/usr/local/bin" ];
    go = [ "/usr/local/go/bin" "/usr/lib/go/bin" "/usr/bin" ];
  };
  findTool = name: ''
    tool=
    for dir in ${builtins.concatStringsSep " " hostPaths.${name}}; do
      if [ -x "$dir/${name}" ]; then tool="$dir/${name}"; break; fi
    done
    if [ -z "$tool" ]; then
      echo "nixpkgs stand-in: no ${name} a build user can run in ${builtins.concatStringsSep ", " hostPaths.${name}} (bash .ci/setup installs it)" >&2
      exit 1
    fi
  '';

  # rustPlatform.buildRustPackage: `cargo build --release --offline --locked` of `src` with the
  # host's cargo, every binary target into $out/bin. Only crates without dependencies (or with
  # vendored ones) build offline, as in the Nix sandbox; `cargoLock.lockFile` must be the
  # source's Cargo.lock, as nixpkgs checks.
  buildRustPackage = { pname, version ? "0", src, cargoLock ? { }, ... }: derivation {
    inherit system src;
    name = "${pname}-${version}";
    builder = "/bin/sh";
    PATH = "/usr/local/bin:/usr/bin:/bin";
    args = [ "-euc" (findTool "cargo" + ''
      work="$TMPDIR/source"
      cp -r "$src" "$work" && chmod -R u+w "$work" && cd "$work"
      export CARGO_HOME="$TMPDIR/cargo-home" CARGO_TARGET_DIR="$TMPDIR/target"
      "$tool" build --release --offline --locked
      mkdir -p "$out/bin"
      find "$CARGO_TARGET_DIR/release" -maxdepth 1 -type f -perm -u+x -exec cp {} "$out/bin/" \;
    '') ];
  };
  rustPlatform = { inherit buildRustPackage; };

  # buildGoModule: `go build` of `src` with the host's go, offline (GOPROXY=off, GOFLAGS=-mod=mod):
  # only modules without dependencies (vendorHash = null) build, as in the Nix sandbox.
  # Binaries are named after the last element of their package path, as nixpkgs does.
  buildGoModule = { pname, version ? "0", src, vendorHash ? null, subPackages ? [ "." ], ... }: derivation {
    inherit system src;
    name = "${pname}-${version}";
    builder = "/bin/sh";
    PATH = "/usr/local/bin:/usr/bin:/bin";
    packages = builtins.concatStringsSep " " subPackages;
    args = [ "-euc" (findTool "go" + ''
      work="$TMPDIR/source"
      cp -r "$src" "$work" && chmod -R u+w "$work" && cd "$work"
      # Go's build cache is content-addressed: one shared by every build user (files 0666 under
      # /tmp) spares recompiling the standard library in each build (the first build of a machine takes
      # minutes); the outputs do not change.
      export HOME="$TMPDIR" GOCACHE=/tmp/forge-standin-go-cache GOPATH="$TMPDIR/go" GOPROXY=off \
        GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
      mkdir -p "$out/bin"
      for pkg in $packages; do
        (umask 000 && "$tool" build -trimpath -o "$out/bin/" "$pkg")
      done
      chmod 0555 "$out"/bin/*
    '') ];
  };

  pythonDep = name: { pname = name; standin = true; };
  python3Packages = {
    inherit buildPythonApplication;
    pytest = hostTool "pytest";
  } // builtins.listToAttrs (map (n: { name = n; value = pythonDep n; }) [
    "setuptools" "click" "jinja2" "pydantic" "pyyaml" "rich" "kubernetes" "urllib3" "psycopg"
    "aiohttp" "hypothesis" "pytest-timeout"
  ]);

  # The host's CA bundle, laid out as nixpkgs' cacert.
  cacert = runCommand "standin-cacert" { } ''
    mkdir -p "$out/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$out/etc/ssl/certs/ca-bundle.crt"
  '';

  hello = writeShellApplication { name = "hello"; text = ''echo "Hello, world!"''; };

  # Host programs (by name on PATH, or an absolute path kept as is) copied into the store together with every shared library they load, each at
  # its host path under $out (the dynamic loader included), and `links` (name -> program) beside
  # them: unlike hostTool, these run in an image's root filesystem with nothing of the host's,
  # which is what the builder image needs (flake.nix, nix-builder-image).
  hostBundle = name: tools: links: runCommand "standin-${name}"
    { inherit tools; links = builtins.concatStringsSep " " (builtins.attrValues (builtins.mapAttrs (l: t: "${l}=${t}") links)); } ''
    mkdir -p "$out/bin"
    for tool in $tools; do
      case "$tool" in
        /*) real=$(readlink -f "$tool"); target="$out$tool"; mkdir -p "$(dirname "$target")" ;;
        *) for dir in /usr/local/bin /usr/bin /bin /usr/sbin /sbin; do
             if [ -x "$dir/$tool" ]; then real=$(readlink -f "$dir/$tool"); break; fi
           done
           target="$out/bin/$tool" ;;
      esac
      cp "$real" "$target"
      ldd "$real" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | while read -r lib; do
        mkdir -p "$out$(dirname "$lib")"
        [ -e "$out$lib" ] || cp -L "$lib" "$out$lib"
      done
    done
    for link in $links; do ln -s "''${link#*=}" "$out/bin/''${link%%=*}"; done
  '';

  dockerToolsFile = ./dockerTools.nix;
  dockerTools =
    if builtins.pathExists dockerToolsFile
    then import dockerToolsFile { inherit system; }
    else { };
in
{
  inherit system writeShellApplication writeText runCommand python3Packages hello dockerTools cacert
    rustPlatform buildGoModule;
  # What the builder image contains (flake.nix): the host's programs, bundled with their libraries.
  nix = hostBundle "nix" [ "nix" "/usr/libexec/nix/build-remote" ]
    (builtins.listToAttrs (map (n: { name = n; value = "nix"; })
      [ "nix-build" "nix-store" "nix-instantiate" "nix-env" "nix-shell" "nix-collect-garbage" "nix-daemon" "nix-channel" "nix-hash" "nix-prefetch-url" ]));
  bashInteractive = hostBundle "bash" [ "bash" ] { sh = "bash"; };
  coreutilsFull = hostBundle "coreutils" [ "env" "cat" "ls" "mkdir" "cp" "mv" "rm" "ln" "chmod" "echo" "head" "tail" "sort" "id" "uname" "test" "true" "false" "readlink" "dirname" "basename" "tr" "wc" ] { };
  gnutar = hostBundle "gnutar" [ "tar" ] { };
  gzip = hostBundle "gzip" [ "gzip" ] { gunzip = "gzip"; };
  xz = hostBundle "xz" [ "xz" ] { unxz = "xz"; };
  gitMinimal = hostBundle "git" [ "git" ] { };
  python3 = hostTool "python3";
  cargo = hostTool "cargo";
  rustc = hostTool "rustc";
  clippy = hostTool "cargo-clippy";
  rustfmt = hostTool "rustfmt";
  go = hostTool "go";
  nodejs = hostTool "node";
  ruff = hostTool "ruff";
  git = hostTool "git";
  skopeo = hostTool "skopeo";
  kubectl = hostTool "kubectl";
  coreutils = hostTool "env";
}
