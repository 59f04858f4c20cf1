# Thin wrapper over the two README commands. Everything real is in CMakeLists.txt.
JOBS ?= 2
BUILD ?= build
ASAN_BUILD ?= build-asan

.PHONY: all deps build test test-asan demo fuzz clean

all: build

deps:
	@bash .ci/deps

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release
	cmake --build $(BUILD) -j$(JOBS)

# The test command: Release build with CUDA (when nvcc is there) + EMU, then ASan/UBSan, then
# every libFuzzer target for TEST_FUZZ_SECONDS from its committed corpus, then the demo
# shortened to 2 training steps with the notebooks executed.
# The ASan run leaves the Python reference comparisons (llama.cpp, transformers, PEFT, gguf-py,
# run by un-instrumented Python) to the Release run just passed: DOPPEL_REF_IN_RELEASE=1; every
# doppel command still runs under the sanitizers.
TEST_FUZZ_SECONDS ?= 20
test: build
	DOPPEL_REF_IN_RELEASE= ctest --test-dir $(BUILD) --output-on-failure -j$(JOBS)
	$(MAKE) --no-print-directory test-asan DOPPEL_REF_IN_RELEASE=1
	$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(TEST_FUZZ_SECONDS)
	DEMO_STEPS=2 DEMO_CONTEXTS=4 DEMO_STRICT=1 DEMO_OUT=$(BUILD)/demo bash tests/demo.sh $(BUILD)/doppel

# -O1 (asserts kept): what the sanitizers' own docs advise; at -O0 the SmolLM2 suites took 1.6x as long.
# Alone, it makes the reference comparisons too (DOPPEL_REF_IN_RELEASE empty).
DOPPEL_REF_IN_RELEASE ?=
test-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DDOPPEL_SANITIZE=ON -DDOPPEL_CUDA=OFF \
	  -DCMAKE_C_FLAGS_DEBUG="-g -O1" -DCMAKE_CXX_FLAGS_DEBUG="-g -O1"
	cmake --build $(ASAN_BUILD) -j$(JOBS)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  DOPPEL_REF_IN_RELEASE=$(DOPPEL_REF_IN_RELEASE) ctest --test-dir $(ASAN_BUILD) --output-on-failure -j$(JOBS)

# The demo: runs the pipeline on the bundled sample export, as far as it is built today.
demo: build
	bash tests/demo.sh $(BUILD)/doppel

# Bounded libFuzzer runs of every target in tests/fuzz (clang, ASan + UBSan): new inputs go to
# build-fuzz/corpus-<target>, the committed corpus is read; any crash, leak, timeout or
# sanitizer report fails the run and leaves the input in build-fuzz/.
FUZZ_SECONDS ?= 60
fuzz: deps
	cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
	  -DCMAKE_CXX_COMPILER=clang++ -DDOPPEL_FUZZ=ON -DDOPPEL_CUDA=OFF
	cmake --build build-fuzz -j$(JOBS) --target fuzzers
	@bash tests/fuzz/run.sh build-fuzz $(FUZZ_SECONDS)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-fuzz
