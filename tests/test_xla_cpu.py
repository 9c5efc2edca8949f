"""twin_core sets XLA's CPU vector width before JAX starts, unless one was chosen."""

import os
import subprocess
import sys

from twin_core.xla_cpu import prefer_wide_vectors


def test_the_width_is_added_to_other_flags_and_a_chosen_one_is_kept():
    env: dict[str, str] = {}
    prefer_wide_vectors(env)
    assert env == {"XLA_FLAGS": "--xla_cpu_prefer_vector_width=512"}
    env = {"XLA_FLAGS": "--xla_dump_to=/tmp/dump"}
    prefer_wide_vectors(env)
    assert env["XLA_FLAGS"] == "--xla_dump_to=/tmp/dump --xla_cpu_prefer_vector_width=512"
    env = {"XLA_FLAGS": "--xla_cpu_prefer_vector_width=256"}
    prefer_wide_vectors(env)
    assert env["XLA_FLAGS"] == "--xla_cpu_prefer_vector_width=256"


def test_importing_twin_core_sets_it_for_the_process_and_its_children():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    script = "import os, twin_core; print(os.environ['XLA_FLAGS'])"
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "--xla_cpu_prefer_vector_width=512"
