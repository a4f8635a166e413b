# The two commands a newcomer needs:
#   make run    install what is missing, build a release, serve Confab on http://127.0.0.1:3000
#   make test   install what is missing, run every test (unit, integration, browser)
.PHONY: run test dev lint bench

run:
	@scripts/setup.sh
	@. scripts/env.sh && cargo leptos build --release
	@echo "Confab on http://$${CONFAB_ADDR:-127.0.0.1:3000} (database: $${CONFAB_DB:-confab.db})"
	./target/release/confab

test:
	@scripts/setup.sh --test
	@scripts/test.sh

# Development: rebuilds and reloads the page on every change.
dev:
	@scripts/setup.sh
	@. scripts/env.sh && cargo leptos watch

lint:
	@scripts/lint.sh

# Side-by-side benchmark against the reference peers (about 10 minutes; BENCHMARKS.md).
bench:
	@scripts/bench.sh
