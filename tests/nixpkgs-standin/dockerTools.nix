/**
  Stand-in for nixpkgs `dockerTools`: `buildLayeredImage` and `streamLayeredImage` with the
  same calling convention, producing real, reproducible docker-archives (no Docker, no nixpkgs).

  The work is done by ./docker-archive.py run with the host Python (builds here run with the
  sandbox off). One layer per store path of the closure of `contents` (past `maxLayers` the rest
  share one layer), then a customisation layer linking `contents` into `/`.

  # Inputs

  `system`
  : the system the images are for (`x86_64-linux`, `aarch64-linux`, …); sets the image
    architecture and the derivations' `system`, so building another system's image needs a
    builder for it (or `extra-platforms`).

  `python`
  : absolute path of the host Python 3 (default `/usr/bin/python3`).

  # Examples

  ```nix
  dockerTools = import ./dockerTools.nix { system = "x86_64-linux"; };
  image = dockerTools.buildLayeredImage { name = "api"; contents = [ app ]; config.Cmd = [ "/bin/api" ]; };
  ```
*/
{ system, python ? "/usr/bin/python3" }:
let
  script = ./docker-archive.py;

  mkImage = mode: drvName:
    { name
    , tag ? null
    , contents ? [ ]
    , config ? { }
    , maxLayers ? 100
    , extraFiles ? { } # stand-in only: { "/etc/motd" = "text"; } in the customisation layer
    , ...
    }:
    let
      contentsList = if builtins.isList contents then contents else [ contents ];
      graphs = builtins.concatLists (builtins.genList
        (i: [ "closure-${toString i}" (builtins.elemAt contentsList i) ])
        (builtins.length contentsList));
    in
    derivation {
      name = drvName name;
      inherit system python;
      builder = python;
      args = [ script mode ];
      exportReferencesGraph = graphs;
      conf = builtins.toJSON {
        inherit name tag config maxLayers extraFiles system;
        contents = map toString contentsList;
      };
    };
in
{
  /** A gzip'd docker-archive file (`<name>.tar.gz`), as `docker load` and `skopeo copy docker-archive:` read. */
  buildLayeredImage = mkImage "build" (name: "${name}.tar.gz");

  /** An executable that writes the (uncompressed) docker-archive to stdout. */
  streamLayeredImage = mkImage "script" (name: "stream-${name}");
}
