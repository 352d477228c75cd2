#!/usr/bin/env bash
# Kiln's test command (README "The two commands"; .ci/run calls exactly this).
#
#   tests/run.sh            system packages, the workspace tests, the wgpu tests
#   tests/run.sh deps       only install what the wgpu and MPI tests need
#   tests/run.sh workspace  only `cargo test --release --workspace`
#   tests/run.sh wgpu       only the wgpu tests (packages first)
#
# The wgpu tests run kiln's wgpu backend on lavapipe, Mesa's CPU Vulkan
# driver (Debian: mesa-vulkan-drivers), so they need no GPU; the distributed
# tests run `mpirun` over Open MPI (libopenmpi-dev, openmpi-bin). `all` builds
# the workspace once with kiln-trainer's `wgpu` and `mpi` features (a build with and one
# without it share almost nothing: wgpu changes features of serde, bitflags
# and friends, so arrow, parquet, tokenizers and burn would all compile twice)
# and runs every test, the small `kiln-wgpu` binary included.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each wgpu test bounds itself (KILN_WGPU_TIMEOUT_S per test / kiln process,
# default 600 s); this bounds the whole cargo run, build included, in case
# something outside a test hangs (adapter discovery at start-up, say).
WGPU_STEP_LIMIT="${KILN_WGPU_STEP_LIMIT:-3600}"

# The loader (libvulkan1) and lavapipe with its ICD file (mesa-vulkan-drivers);
# Open MPI for the distributed tests (libopenmpi-dev, openmpi-bin) and
# libclang-dev for the `mpi` crate's bindings.
PACKAGES=(libvulkan1 mesa-vulkan-drivers libopenmpi-dev openmpi-bin libclang-dev)
# Every optional engine the tests cover, in one build.
FEATURES="kiln-trainer/wgpu,kiln-trainer/mpi"

install_packages() {
    local missing=()
    for p in "${PACKAGES[@]}"; do
        # `dpkg -s` also lists removed-but-configured packages: check the state.
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$p")
        fi
    done
    if [ ${#missing[@]} -eq 0 ]; then
        return 0
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        sudo=(sudo -n)
    fi
    echo "tests/run.sh: installing ${missing[*]} for the wgpu and MPI tests" >&2
    if ! { DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq \
            --no-install-recommends "${missing[@]}"; } >/tmp/kiln-apt.log 2>&1; then
        echo "tests/run.sh: error: apt-get could not install ${missing[*]} (it needs root or passwordless sudo and the packages in its sources; log: /tmp/kiln-apt.log)" >&2
        exit 1
    fi
}

run_workspace() {
    cargo test --release --workspace
}

run_wgpu() {
    install_packages
    # --test-threads=2: the tests are shader-compilation bound; more threads on
    # a small machine only stretch each test towards its timeout.
    timeout --kill-after=30 "$WGPU_STEP_LIMIT" \
        cargo test --release -p kiln-trainer --features wgpu --test kiln-wgpu \
        -- --test-threads=2
}

run_all() {
    install_packages
    timeout --kill-after=30 "$WGPU_STEP_LIMIT" \
        cargo test --release --workspace --features "$FEATURES"
}

case "${1:-all}" in
    all) run_all ;;
    deps) install_packages ;;
    workspace) run_workspace ;;
    wgpu) run_wgpu ;;
    *)
        echo "usage: tests/run.sh [all|deps|workspace|wgpu]" >&2
        exit 2
        ;;
esac
