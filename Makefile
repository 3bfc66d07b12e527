# The two commands of the README, and what they share. Both run as root and install what is
# missing first (scripts/setup.sh: Debian packages, nightly rust-src, bpf-linker).
CARGO ?= cargo

.PHONY: demo test setup bench

setup:
	@scripts/setup.sh

# A local dcnet cluster in network namespaces. `make demo ARGS=--keep` leaves it running.
demo: setup
	@$(CARGO) build --release --quiet -p dcnet-agent -p dcnet-tests --bins
	@target/release/dcnet-demo $(ARGS)

# Everything CI checks: formatting, lints, unit and integration tests (these need root).
test: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --all-targets --quiet -- -D warnings
	$(CARGO) build --bins --quiet
	$(CARGO) test
	# The patched chitchat's own tests (third_party/ is not a workspace member).
	$(CARGO) test --manifest-path third_party/chitchat/Cargo.toml --target-dir target/chitchat --lib --quiet

# Benchmarks print tables with their peers side by side; they are not pass/fail.
bench: setup
	$(CARGO) build --release --quiet -p dcnet-agent
	$(CARGO) bench -p dcnet-benches
