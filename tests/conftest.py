"""Test setup: eight host devices for sharding tests, CPU only, quiet TensorFlow, XLA's quick
compilation (the tests' programs are tiny: compiling them is most of the suite's time, running them
little), and one XLA compilation cache shared by the test workers and the CLIs they start (most
tests compile the same few small programs, so each is compiled once).

These variables must be set before JAX or TensorFlow start, hence here.
"""

import os
import tempfile

QUICK_COMPILE_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {QUICK_COMPILE_FLAGS}")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "aigc_jax_tests_xla_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
