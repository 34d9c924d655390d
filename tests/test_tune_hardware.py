"""Hardware fingerprints: stable ids, family keys, and what they are made of."""

from __future__ import annotations

import re

import pytest
from conftest import CUDA

from atrous.autotune import hardware


def test_cpu_fingerprint_is_stable_and_complete():
    fp = hardware.cpu_fingerprint()
    assert re.fullmatch(r"[0-9a-f]{12}", fp["id"])
    for key in ("brand", "llvm_cpu", "features_hash", "cores", "caches", "numba", "llvmlite"):
        assert key in fp, key
    hardware.cpu_fingerprint.cache_clear()
    assert hardware.cpu_fingerprint()["id"] == fp["id"], "recomputed, the same id"


def test_family_key_names_arch_cpu_and_vector_isa():
    fp = hardware.cpu_fingerprint()
    arch, cpu, isa = fp["family"].split(":")
    assert arch == fp["machine"] and cpu == fp["llvm_cpu"] and isa


def test_id_depends_on_every_fact():
    a = hardware._seal({"kind": "cpu", "cores": 2}, "f")
    b = hardware._seal({"kind": "cpu", "cores": 4}, "f")
    assert a["id"] != b["id"] and a["family"] == b["family"] == "f"


def test_backends_and_devices_pick_their_fingerprint():
    assert hardware.fingerprint("numba")["kind"] == "cpu"
    assert hardware.fingerprint("triton", "cpu")["kind"] == "triton-interpreter"


@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_gpu_fingerprint():
    fp = hardware.fingerprint("triton", "cuda:0")
    assert fp["kind"] == "cuda" and fp["family"].startswith("cuda:sm_") and fp["sms"] > 0


def test_describe_shows_the_fingerprint():
    assert hardware.cpu_fingerprint()["id"] in hardware.describe()["fingerprint"]
