#!/usr/bin/env bash
# Builds the Debian package (target/debian/paystar-sync_*.deb) and checks it:
# its contents (dpkg-deb --contents) and the systemd unit it ships
# (systemd-analyze verify, against the unpacked package).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deb >/dev/null 2>&1; then
  cargo install cargo-deb --locked --version "^3"
fi

# The `dist` profile: what the benchmarks measure (see Cargo.toml).
cargo build --profile dist --locked
# The binary is wherever cargo builds (CARGO_TARGET_DIR may move it); cargo-deb
# maps the `target/release/` asset path there too, and to the profile it is
# given. Generated assets go in ./target/assets.
target_dir=$(cargo metadata --format-version 1 --no-deps --locked \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
mkdir -p target/assets
bin="$target_dir/dist/paystar-sync"
"$bin" completions bash > target/assets/paystar-sync.bash
"$bin" completions zsh > target/assets/_paystar-sync
"$bin" completions fish > target/assets/paystar-sync.fish
"$bin" man | gzip -9n > target/assets/paystar-sync.1.gz

deb=$(cargo deb --no-build --profile dist --locked --strip 2>/dev/null | tail -n 1)
echo "built $deb"

contents=$(dpkg-deb --contents "$deb")
for path in \
  ./usr/bin/paystar-sync \
  ./lib/systemd/system/paystar-sync.service \
  ./etc/paystar-sync/config.example.yaml \
  ./usr/share/bash-completion/completions/paystar-sync \
  ./usr/share/zsh/vendor-completions/_paystar-sync \
  ./usr/share/fish/vendor_completions.d/paystar-sync.fish \
  ./usr/share/man/man1/paystar-sync.1.gz \
  ./usr/share/doc/paystar-sync/README.md; do
  if ! grep -q " $path\$" <<<"$contents"; then
    echo "error: $deb lacks $path" >&2
    exit 1
  fi
done
# Nothing runs until the operator writes /etc/paystar-sync/config.yaml.
if grep -q " ./etc/paystar-sync/config.yaml\$" <<<"$contents"; then
  echo "error: $deb must not ship /etc/paystar-sync/config.yaml" >&2
  exit 1
fi
if dpkg-deb --ctrl-tarfile "$deb" | tar -t | grep -Eq '(postinst|prerm|postrm)$'; then
  echo "error: $deb has maintainer scripts; installing it must start nothing" >&2
  exit 1
fi

# Verify the unit as installed: the package unpacked over this host's own units
# (the targets it orders against) and /bin/kill (its ExecReload). Any complaint,
# even one systemd only warns about (an unknown key), fails the build.
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
dpkg-deb --extract "$deb" "$root"
mkdir -p "$root/bin" "$root/lib/systemd/system"
cp /bin/kill "$root/bin/"
cp -rn /lib/systemd/system/. "$root/lib/systemd/system/"
complaints=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify --root="$root" \
  "$root/lib/systemd/system/paystar-sync.service" 2>&1) || true
if [ -n "$complaints" ]; then
  echo "error: systemd-analyze verify: $complaints" >&2
  exit 1
fi
# A configuration error (exit 78) must not restart the unit for ever.
if ! grep -qx 'RestartPreventExitStatus=78' "$root/lib/systemd/system/paystar-sync.service"; then
  echo "error: the unit lacks RestartPreventExitStatus=78: a bad configuration would restart it every RestartSec" >&2
  exit 1
fi
echo "ok: $deb (contents checked, unit verified)"
