# Sourced by ci/build_wheel.sh and ci/test.sh (run from the repository root): which CPython
# versions sfer supports, and where this machine has them.

# The supported versions, one per line: the "Programming Language :: Python :: 3.X" classifiers
# of pyproject.toml (tests/test_package.py checks that they agree with requires-python).
supported_pythons() {
    grep -oE '"Programming Language :: Python :: 3\.[0-9]+"' pyproject.toml \
        | grep -oE '3\.[0-9]+' | sort -uV || true
}

# "3.X" if the interpreter $1 runs and is CPython, else nothing.
python_version_of() {
    "$1" -c 'import sys; sys.implementation.name == "cpython" and print("%d.%d" % sys.version_info[:2])' \
        2>/dev/null || true
}

# The interpreter's own path (sys.executable), not a pyenv shim that dispatches on the
# current directory's .python-version.
python_real_path() {
    "$1" -c 'import sys; print(sys.executable)'
}

# An interpreter for version $1 ("3.X"), or nothing: python3.X on PATH if it runs (a pyenv shim
# of a version that is not enabled does not), else the newest ~/.pyenv/versions/3.X.Y.
find_python() {
    local want=$1 cand
    for cand in "$(command -v "python$want" || true)" \
                $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$want".*/bin/python 2>/dev/null | sort -rV); do
        if [[ -n $cand && $(python_version_of "$cand") == "$want" ]]; then
            python_real_path "$cand"
            return
        fi
    done
}

# An interpreter from a version ("3.X"), a command name or a path, or nothing.
resolve_python() {
    local py
    if [[ $1 =~ ^3\.[0-9]+$ ]]; then py=$(find_python "$1"); else py=$(command -v "$1" || true); fi
    if [[ -n $py && -n $(python_version_of "$py") ]]; then python_real_path "$py"; fi
}
