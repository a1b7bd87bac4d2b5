"""minissd.cuda's import rules: never fails to import, and says clearly what is missing."""

import builtins
import os
import subprocess
import sys

import pytest

import minissd.cuda as mc

# No kernel runs here, so conftest.py leaves this file's launch sizes alone:
# test_cuda_launch_1d_sizes_blocks_to_the_work checks the real defaults (blocks of THREADS_1D = 128).


def run_python(code, **env):
    """Run ``code`` in a fresh interpreter (numba not yet imported); return its stdout."""
    full_env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    full_env.update(env)
    done = subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_cuda_import_minissd_never_imports_numba_cuda():
    out = run_python("import sys, minissd, minissd.cuda; print('numba.cuda' in sys.modules)")
    assert out.strip() == "False"


def test_cuda_env_var_set_after_numba_import_is_explained():
    # The trap: NUMBA_ENABLE_CUDASIM is read once, when numba is first imported.
    out = run_python(
        "import numba, os\n"
        "os.environ['NUMBA_ENABLE_CUDASIM'] = '1'\n"
        "import minissd.cuda as mc\n"
        "if mc.is_available():\n"
        "    print('a real GPU')\n"
        "else:\n"
        "    try:\n"
        "        mc.require()\n"
        "    except RuntimeError as e:\n"
        "        print(e)\n")
    if out.strip() == "a real GPU":
        pytest.skip("this machine has a GPU: nothing is missing")
    assert "set after numba had been imported" in out


@pytest.fixture
def fresh(monkeypatch):
    """minissd.cuda as if numba.cuda had never been tried (restored afterwards)."""
    monkeypatch.setattr(mc, "_cuda", None)
    monkeypatch.setattr(mc, "_problem", None)
    return monkeypatch


def fail_import_of_numba_cuda(monkeypatch, error):
    real_import = builtins.__import__

    def fake_import(name, globals=None, locals=None, fromlist=(), level=0):
        if name == "numba" and fromlist and "cuda" in fromlist:
            raise error
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", fake_import)


@pytest.mark.parametrize("error, words", [
    (ImportError("No module named 'numba_cuda'"), "numba-cuda is not installed"),
    (RuntimeError("libcudart.so not found"), "CUDA's runtime library"),  # not an ImportError!
])
def test_cuda_require_says_what_is_missing_and_the_fix(fresh, error, words):
    fail_import_of_numba_cuda(fresh, error)
    assert not mc.is_available()  # and no exception
    with pytest.raises(RuntimeError, match=words) as info:
        mc.require()
    assert 'pip install -e ".[cuda]"' in str(info.value)


def test_cuda_missing_compiler_is_reported_up_front():
    class NoCompiler:
        @staticmethod
        def compile_ptx(*args, **kwargs):
            raise OSError("libnvrtc.so.12: cannot open shared object file")

    assert "libnvrtc" in mc._compiler_error(NoCompiler)
    assert "numba-cuda[cu12]" in mc._COMPILER_HINT


def test_cuda_launch_1d_sizes_blocks_to_the_work():
    assert mc.launch_1d(40) == (1, 64)  # 40 threads' work: one block of two warps
    assert mc.launch_1d(1000) == (8, 128)  # ceil(1000 / 128) blocks of THREADS_1D
    assert mc.launch_1d(0) == (1, 32)
