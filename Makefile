# Thin wrapper around CMake: make, make asan, make test, make demo.
BUILD ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
TSAN_BUILD ?= build-tsan
JOBS ?= $(shell nproc)

.PHONY: all meridian asan tsan fuzz test test-unit test-integration test-asan test-fuzz demo setup clean format bench

all: meridian

meridian:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

asan:
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DMERIDIAN_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)

# ThreadSanitizer: the workers share the config snapshot, counters and the mock's state.
tsan:
	@cmake -S . -B $(TSAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DMERIDIAN_TSAN=ON >/dev/null
	@cmake --build $(TSAN_BUILD) -j $(JOBS)

fuzz:
	@CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMERIDIAN_FUZZ=ON >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS)

setup:
	@scripts/setup

# Everything: unit and integration tests on the release build, again under ASan+UBSan, then
# the fuzz targets briefly over the committed corpus.
test: setup
	@$(MAKE) --no-print-directory meridian asan fuzz
	@scripts/run-tests

test-unit: meridian
	@cd $(BUILD) && ctest --output-on-failure

demo: setup meridian
	@scripts/demo

bench: meridian
	@bench/run

format:
	@clang-format -i $$(git ls-files 'src/*.c' 'src/*.h' 'tests/*.c')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD) $(FUZZ_BUILD)
