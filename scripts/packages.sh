# Sourced by scripts/test and .ci/run: which system packages the tests need, and installing them.
#
#   need "why" check-command apt-package [dnf-package]   # adds the package unless `check-command` succeeds
#   install_needed                                      # installs what `need` added, or says how and fails
#
# Packages come from the machine's package manager (apt-get on Debian and Ubuntu, dnf on Fedora), as root or
# through sudo. Where neither works, the exact command is printed and the script stops: nothing is skipped.

needed=()      # package names for this machine's package manager
needed_why=()  # one line each: the package and why the tests need it

if command -v apt-get >/dev/null; then
    package_manager=apt
elif command -v dnf >/dev/null; then
    package_manager=dnf
else
    package_manager=""
fi

need() {
    local why=$1 check=$2 apt_name=$3 dnf_name=${4:-$3}
    if eval "$check" >/dev/null 2>&1; then
        return 0
    fi
    local name=$apt_name
    [ "$package_manager" = dnf ] && name=$dnf_name
    for n in "${needed[@]}"; do [ "$n" = "$name" ] && return 0; done
    needed+=("$name")
    needed_why+=("$name: $why")
}

install_needed() {
    [ ${#needed[@]} -eq 0 ] && return 0
    echo "The tests need these system packages, which this machine lacks:"
    printf '  %s\n' "${needed_why[@]}"
    local cmd
    case "$package_manager" in
        apt) cmd="apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ${needed[*]}" ;;
        dnf) cmd="dnf install -y ${needed[*]}" ;;
        *)
            echo "No apt-get or dnf here: install the packages above with this system's package manager, then run" \
                "this again." >&2
            return 1
            ;;
    esac
    local as=""
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null || [ -n "${VAE_NO_INSTALL:-}" ]; then
            echo "Install them as root, then run this again:" >&2
            echo "  sudo sh -c '$cmd'" >&2
            return 1
        fi
        as="sudo"
    elif [ -n "${VAE_NO_INSTALL:-}" ]; then
        echo "Install them, then run this again:" >&2
        echo "  sh -c '$cmd'" >&2
        return 1
    fi
    echo "Installing them${as:+ through sudo}: $cmd"
    if ! $as sh -c "$cmd" >/dev/null; then
        echo "The install failed (above). Install the packages yourself, then run this again:" >&2
        echo "  ${as:+sudo }sh -c '$cmd'" >&2
        return 1
    fi
    needed=()
    needed_why=()
}

# A Vulkan driver: any installed ICD (a GPU's, or lavapipe).
have_vulkan_driver() {
    local dir
    for dir in /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/share/vulkan/icd.d; do
        compgen -G "$dir/*.json" >/dev/null && return 0
    done
    return 1
}

# SwiftShader's Vulkan driver, as Debian's chromium package installs it beside the browser.
swiftshader_icd() {
    local f
    for f in /usr/lib/chromium/vk_swiftshader_icd.json /usr/lib/*/chromium/vk_swiftshader_icd.json; do
        [ -f "$f" ] && { echo "$f"; return 0; }
    done
    return 1
}

# What `cargo test --release` needs beyond Rust.
need_test_packages() {
    need "a Vulkan driver that runs on the CPU (Mesa's lavapipe): the GPU tests run the real shaders on it" \
        have_vulkan_driver mesa-vulkan-drivers
    need "spirv-val, which checks the SPIR-V that naga makes of every shader (tests/portability.rs)" \
        "command -v spirv-val" spirv-tools
    need "glslangValidator, which compiles the GLSL that naga makes of every shader (tests/portability.rs)" \
        "command -v glslangValidator" glslang-tools glslang
    need "the browser that tests/web drives (headless, WebGPU on its SwiftShader)" \
        "command -v chromium && swiftshader_icd" chromium
    need "renderdoccmd, which captures a profiled step (tests/capture.rs)" "command -v renderdoccmd" renderdoc
}
