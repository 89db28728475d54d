# minillm — the two commands a newcomer needs:
#   make demo   pretrains a small GPT on Chinese text, fine-tunes it for sentiment (runs/demo/)
#   make test   runs the whole test suite twice: on the CPU and on the strict stand-in device
# Needs only python3 >= 3.10 (and PyPI for the first install).

PYTHON      ?= python3
PYTEST_ARGS ?=
VENV        ?= .venv
# PyTorch is an optional reference for tests/benchmarks. On the project's machines pip finds a local
# CPU wheel of 2.13.0; elsewhere `pip install torch==2.13.0` on Linux takes the PyPI wheel, which is a
# CUDA build of several GB. Point TORCH at a wheel file or another spec to choose.
TORCH       ?= torch==2.13.0
# CuPy wheel for `make test-gpu`: cupy-cuda12x for CUDA 12.x, cupy-cuda13x for CUDA 13.x.
CUPY        ?= cupy-cuda12x

VPY   := $(VENV)/bin/python
STAMP := $(VENV)/.minillm-dev-installed

# Datasets: MINILLM_DATA defaults to ../shared/datasets when that folder exists.
SHARED_DATA := $(abspath ../shared/datasets)
ifeq ($(origin MINILLM_DATA),undefined)
ifneq ($(wildcard $(SHARED_DATA)),)
MINILLM_DATA := $(SHARED_DATA)
endif
endif
ifdef MINILLM_DATA
export MINILLM_DATA
endif

# Run pytest; exit status 5 ("no tests collected") is reported but not a failure, every other
# non-zero status (failures, errors, interruptions) fails the target.
define pytest_on
	@echo "==> pytest on device '$(1)' $(PYTEST_ARGS)"
	@MINILLM_TEST_DEVICE=$(1) $(VPY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest: no tests collected on device '$(1)'"; exit 0; fi; \
	exit $$rc
endef

.PHONY: test test-cpu test-fake test-gpu torch demo info install clean book book-test

# The two passes run side by side, one per core (TEST_JOBS=1: one after the other); each pass's
# output is printed whole when it ends. BLAS gets one thread per pass unless OMP_NUM_THREADS is set.
TEST_JOBS ?= 2
test:
	@echo "==> make test: the CPU pass and the stand-in pass, $(TEST_JOBS) at a time; each pass's output appears when it ends"
	@OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(MAKE) --no-print-directory -j$(TEST_JOBS) --output-sync=target test-cpu test-fake

test-cpu: $(STAMP)
	$(call pytest_on,cpu)

test-fake: $(STAMP)
	$(call pytest_on,fake)

# The real GPU: needs an NVIDIA GPU and CuPy (installed here if missing; pick CUPY to match CUDA).
test-gpu: $(STAMP)
	@$(VPY) -c "import cupy" 2>/dev/null || $(VPY) -m pip install "$(CUPY)"
	$(call pytest_on,cuda)

install: $(STAMP)

$(VPY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
	  { echo "minillm needs Python >= 3.10; '$(PYTHON)' is older: run make PYTHON=python3.X"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Re-install when the package metadata changes; otherwise re-runs are instant.
$(STAMP): setup.cfg pyproject.toml | $(VPY)
	$(VPY) -m pip install -e ".[dev,mpi,vision]"
	@touch $@

# Optional PyTorch reference (see TORCH above: the PyPI wheel may be a multi-GB CUDA build).
torch: $(VENV)/.minillm-torch-installed

$(VENV)/.minillm-torch-installed: | $(STAMP)
	$(VPY) -m pip install "$(TORCH)"
	$(VPY) -m pip install -e ".[hf]"
	@touch $@

# The companion book: chapters + notebooks executed in fast mode (BOOK_FULL=1: full size, hours)
# as a static site in build/book/_build/html; a notebook whose source is unchanged keeps its
# outputs unless BOOK_FRESH=1. Fetches MathJax and Mermaid once with `npm pack`
# (or from BOOK_VENDOR); serve it with `python3 -m http.server -d build/book/_build/html`.
BOOK_STAMP := $(VENV)/.minillm-book-installed
book: $(BOOK_STAMP)
	$(VPY) chapters/book/build_book.py $(if $(BOOK_FULL),--full) $(if $(BOOK_FRESH),--fresh)

# Opens two pages of the built book in headless Chromium (Debian: apt-get install chromium
# fonts-noto-cjk): typeset math, drawn Mermaid, a plot, Chinese headings; screenshots saved in
# build/book/screenshots/.
book-test: book
	$(VPY) chapters/book/check_book.py build/book/_build/html

$(BOOK_STAMP): setup.cfg | $(STAMP)
	$(VPY) -m pip install -e ".[book]"
	@touch $@

demo: $(STAMP)
	$(VPY) -m minillm demo

info: $(STAMP)
	$(VPY) -m minillm info

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
