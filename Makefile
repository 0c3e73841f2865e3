# Officina: `make up` runs the platform on the embedded stack; `make test` runs the suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: up test install lint lock clean-data

up: $(STAMP)
	$(VENV)/bin/officina up

test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest $(PYTEST_ARGS)

install: $(STAMP)

# (Re)install when the project or its pins change (torch==2.13.0 is pinned in constraints.txt).
$(STAMP): pyproject.toml constraints.txt sdk/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/lint-imports

# Re-pin after changing dependencies in pyproject.toml.
lock: $(STAMP)
	( echo "# Exact versions of everything \`make\` installs (regenerate: make lock)."; \
	  $(PY) -m pip freeze --exclude-editable | grep -v '^officina' | sed 's/^torch==\(.*\)+cpu/torch==\1/' ) > constraints.txt

clean-data:
	rm -rf .officina
