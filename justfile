# offsite: every developer and CI entry point.
#   just demo    the main job on its embedded default (no server, no root)
#   just test    install what the tests need, build, run every test
#   just bench   benchmarks, side by side with the native tools

set shell := ["bash", "-euo", "pipefail", "-c"]

# Build outputs live outside the clone so a fresh clone (CI) reuses them:
# a clean wasmtime build takes 6-8 minutes on 2 cores.
cache := env_var_or_default("OFFSITE_CACHE", env_var("HOME") + "/.cache/offsite")
export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", cache + "/target")
wasm_target := cache + "/target-wasm"
export OFFSITE_WASM_DIR := wasm_target + "/wasm32-wasip2/release"
export OFFSITE_BIN := CARGO_TARGET_DIR + "/release/offsite"
export OFFSITE_CACHE := cache

default:
    @just --list

# What building the plugins needs on a bare machine (idempotent, quiet when present):
# the wasm32-wasip2 target, and clang (ring, the TLS provider inside the ftp and
# smtp plugins, compiles C for wasm32; gcc cannot target it)
build-deps:
    #!/usr/bin/env bash
    set -euo pipefail
    if ! rustup target list --installed | grep -qx wasm32-wasip2; then
        echo "build-deps: rustup target add wasm32-wasip2"
        rustup target add wasm32-wasip2
    fi
    if ! command -v clang >/dev/null 2>&1; then
        echo "build-deps: apt-get install clang (ring compiles C for wasm32 with it)"
        sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
        export DEBIAN_FRONTEND=noninteractive
        $sudo apt-get install -y -qq --no-install-recommends clang >/dev/null 2>&1 || {
            $sudo apt-get update -qq
            $sudo apt-get install -y -qq --no-install-recommends clang >/dev/null
        }
    fi

# Install what building and testing need on this machine (idempotent)
deps: build-deps
    @for s in tests/install/*.sh; do bash "$s" >/dev/null; done

# The runner, release build (tests, demo and benchmarks all use it)
build:
    cargo build --release -p offsite

# Every plugin and the template, for wasm32-wasip2
plugins: build-deps
    cd plugins && CARGO_TARGET_DIR={{wasm_target}} cargo build --release
    cd examples/plugin-template && CARGO_TARGET_DIR={{wasm_target}} cargo build --release --target wasm32-wasip2
    cd examples/plugin-template-http && CARGO_TARGET_DIR={{wasm_target}} cargo build --release --target wasm32-wasip2

# The fixture plugins the sandbox tests use
fixtures: build-deps
    cd tests/fixtures && CARGO_TARGET_DIR={{wasm_target}} cargo build --release

# Put PREFIX/bin/offsite and PREFIX/lib/offsite/plugins/*.wasm
install PREFIX: build plugins
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p "{{PREFIX}}/bin" "{{PREFIX}}/lib/offsite/plugins"
    install -m 0755 "$OFFSITE_BIN" "{{PREFIX}}/bin/offsite"
    for f in "$OFFSITE_WASM_DIR"/offsite_*.wasm; do
        name=$(basename "$f" .wasm); name=${name#offsite_}; name=${name//_/-}
        [ "$name" = plugin-template ] || [ "$name" = plugin-template-http ] && continue
        install -m 0644 "$f" "{{PREFIX}}/lib/offsite/plugins/$name.wasm"
    done
    echo "installed into {{PREFIX}}: bin/offsite and $(ls "{{PREFIX}}/lib/offsite/plugins" | tr '\n' ' ')"

# A files backup shipped through local-dir, all under ./demo-out
demo: build plugins
    bash examples/demo/run.sh

# The README's set-up on a bare machine: demo's plan installs the wasm
# target and clang before it builds any plugin (checked on every test run)
setup-check:
    #!/usr/bin/env bash
    set -euo pipefail
    plan=$({{just_executable()}} --justfile {{justfile()}} --dry-run demo 2>&1)
    first_build=$(grep -n 'cargo build' <<<"$plan" | sed -n '/plugins/{s/:.*//;p;q}')
    for step in 'rustup target add wasm32-wasip2' 'apt-get install -y -qq --no-install-recommends clang'; do
        at=$(grep -nF -- "$step" <<<"$plan" | head -1 | cut -d: -f1 || true)
        if [ -z "$at" ] || [ -z "$first_build" ] || [ "$at" -gt "$first_build" ]; then
            echo "setup-check: 'just demo' does not run \"$step\" before building the plugins" >&2
            exit 1
        fi
    done
    echo "setup-check: just demo installs the wasm32-wasip2 target and clang before building plugins"

# Install, build, and pass every test
test: setup-check deps build plugins fixtures
    cargo test --release --workspace
    cd plugins && CARGO_TARGET_DIR={{wasm_target}} cargo test --release --target "$(rustc -vV | sed -n 's/^host: //p')" -p offsite-tftp -p offsite-ftp -p offsite-s3 -p offsite-smtp -p offsite-webhook -p offsite-guest-tls -p offsite-plugin-core -p offsite-sdk
    cd examples/plugin-template && CARGO_TARGET_DIR={{wasm_target}} cargo test --release --target "$(rustc -vV | sed -n 's/^host: //p')"
    cd examples/plugin-template-http && CARGO_TARGET_DIR={{wasm_target}} cargo test --release --target "$(rustc -vV | sed -n 's/^host: //p')"

# fmt + clippy on the host and the plugins; the runner's module graph and
# sizes against ARCHITECTURE.md
lint:
    cargo fmt --all --check
    cargo clippy --release --all-targets --workspace -- -D warnings
    cargo test --release -p offsite-tests --test architecture
    cd plugins && cargo fmt --all --check && CARGO_TARGET_DIR={{wasm_target}} cargo clippy --release --all-targets -- -D warnings

# Benchmarks, as ratios to the native tools, from one run
bench: deps build plugins
    cargo bench -p offsite --bench plugin_startup
    @for s in bench/*.sh plugins/s3/bench.sh; do [ -e "$s" ] && bash "$s"; done
