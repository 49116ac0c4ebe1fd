# The Nix builder image: nix and what a builder needs (a shell, coreutils, tar/gzip/xz, git, CA
# certificates), single-user as root: no build users, no sandbox (most CI runners and Kubernetes
# pods give a container no namespaces of its own), flakes on.
#
# `forge builder-image verify` (app nix-builder:verify) builds it and proves, from the image's
# own root filesystem, that nix evaluates and builds; `forge builder-image release`
# (nix-builder:release) pushes it under Forge's deterministic tags. See README, "Builder image".
{ pkgs, version }:
let
  etc = pkgs.runCommand "forge-nix-builder-etc" { } ''
    mkdir -p $out/etc/nix $out/tmp $out/root $out/nix/var/nix/gcroots
    cat > $out/etc/nix/nix.conf <<'CONF'
    experimental-features = nix-command flakes
    build-users-group =
    sandbox = false
    trusted-users = root
    CONF
    echo 'root:x:0:0:root:/root:/bin/sh' > $out/etc/passwd
    echo 'nobody:x:65534:65534:nobody:/var/empty:/bin/false' >> $out/etc/passwd
    echo 'root:x:0:' > $out/etc/group
    echo 'nogroup:x:65534:' >> $out/etc/group
  '';
  buildImage = pkgs.dockerTools.buildLayeredImageWithNixDb or pkgs.dockerTools.buildLayeredImage;
in
buildImage {
  name = "forge-nix-builder";
  tag = version;
  contents = [ pkgs.nix pkgs.bashInteractive (pkgs.coreutilsFull or pkgs.coreutils) pkgs.gnutar pkgs.gzip pkgs.xz
    pkgs.gitMinimal pkgs.cacert etc ];
  extraCommands = "mkdir -p tmp; chmod 1777 tmp";
  config = {
    Cmd = [ "/bin/sh" ];
    Env = [ "PATH=/bin:/usr/bin" "USER=root" "HOME=/root" "NIX_PAGER=cat"
      "SSL_CERT_FILE=/etc/ssl/certs/ca-bundle.crt" "GIT_SSL_CAINFO=/etc/ssl/certs/ca-bundle.crt" ];
    WorkingDir = "/root";
  };
}
