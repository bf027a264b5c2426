# Sourced by scripts/test: the Debian packages the test suite needs, installed with apt-get
# when this runs as root and a command is missing. Without root the tests that need a missing
# command skip and say why.
#
# One entry per line: "<command> <package>".
apt_needs=(
    "ip iproute2"
    "nft nftables"
    "promtool prometheus"
    "faketime faketime"
    "fusermount3 fuse3"
    "unshare util-linux"
)

apt_missing=()
for entry in "${apt_needs[@]}"; do
    read -r apt_command apt_package <<<"$entry"
    if ! command -v "$apt_command" >/dev/null 2>&1; then
        apt_missing+=("$apt_package")
    fi
done
if ((${#apt_missing[@]})); then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        step "apt-get install ${apt_missing[*]}"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_missing[@]}" >/dev/null
    else
        echo "scripts/test: not installing ${apt_missing[*]} (needs root and apt-get); tests that need them skip" >&2
    fi
fi
