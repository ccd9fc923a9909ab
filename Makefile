# Two commands a newcomer needs: `make demo` and `make test` (see README).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
APT_PACKAGES := libgl1 libglx0 libegl1 libegl-mesa0 libgl1-mesa-dri libgbm1 libx11-6 libxext6 libxfixes3 \
                libxi6 libxrender1 libxkbcommon0 libsm6 libice6

.PHONY: demo demo-images test lint validate-extension apt venv clean

# The main job end to end: scene -> turntable -> coupled relighting -> write-back (see README).
# Offline by construction: real weights are used only if already cached, else tiny random models.
demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) demo/relight_turntable.py --out outputs/demo

# Coupled generation of two prompts (Flux layout, tiny random weights unless --model says otherwise)
demo-images: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m backend couple-images --model tiny \
	    --prompt "Japanese samurai" --prompt "astronaut on Mars" --lam 0.5 \
	    --width 128 --height 128 --compare --overwrite --out outputs/demo_images

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q
	$(PY) -m ruff check .

lint: $(STAMP)
	$(PY) -m ruff check .

venv: $(STAMP)

# Blender's libraries (bpy wheel) and Mesa EGL for GL engines; only installs what is missing.
apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $$missing; \
	  else echo "install with apt (needs root): $$missing"; exit 1; fi; \
	fi

$(STAMP): requirements.txt constraints.txt | apt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is needed (the bpy 5.0 wheel); set PYTHON=python3.11"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt -c constraints.txt
	touch $(STAMP)

validate-extension: $(STAMP)
	$(PY) tools/validate_extension.py

clean:
	rm -rf outputs dist .pytest_cache
