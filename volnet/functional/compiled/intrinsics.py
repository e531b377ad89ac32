"""LLVM building blocks shared by the kernels written as numba intrinsics
(``outer_kernels.py``, ``pointwise.py``, ``pool.py``): the vector width of the CPU numba
compiles for, an array's data pointer, a prefetch, a lane mask, a broadcast and the masked
loads and stores."""

from __future__ import annotations

import functools

from llvmlite import binding, ir
from numba import types
from numba.core import cgutils, config
from numba.extending import intrinsic


@functools.lru_cache(maxsize=None)
def wide_vectors() -> bool:
    """Whether the CPU numba compiles for has AVX-512 (32 vector registers of 16 floats);
    False on AVX2 and older x86 (16 registers of 8 floats or fewer) and on other CPUs.

    The register blocks of the convolution kernels keep up to 24 vectors of 16 floats as
    accumulators; without AVX-512, LLVM splits each into two registers of 8 floats and the
    48 no longer fit the register file (they spill to memory on every tap). Those kernels
    take narrower blocks there. NUMBA_CPU_FEATURES, where set, is what
    numba targets; a NUMBA_CPU_NAME other than "host" without it (a portable cache, e.g.
    "generic") counts as narrow, which is correct anywhere; else the host's own features."""
    features = config.CPU_FEATURES
    if not features:
        if config.CPU_NAME not in (None, "host"):
            return False
        features = binding.get_host_cpu_features().flatten()
    return "+avx512f" in features.split(",")


def array_data(context, builder, ty, val):
    """The data pointer of array ``val`` of numba type ``ty``, inside an intrinsic's
    codegen."""
    return context.make_array(ty)(context, builder, val).data


def lane_mask(builder, count, lanes: int = 16):
    """The vector of ``lanes`` booleans whose low min(lanes, max(0, count)) are set (count an
    i64 value), from scalar arithmetic: a 16-bit integer's low bits, bitcast. A vector
    compare per mask takes registers that a kernel's loop needs (pointwise.py)."""
    i64 = ir.IntType(64)
    zero, full = ir.Constant(i64, 0), ir.Constant(i64, lanes)
    count = builder.select(builder.icmp_signed("<", count, zero), zero, count)
    count = builder.select(builder.icmp_signed(">", count, full), full, count)
    bits = builder.sub(builder.shl(ir.Constant(i64, 1), count), ir.Constant(i64, 1))
    return builder.bitcast(builder.trunc(bits, ir.IntType(lanes)),
                           ir.VectorType(ir.IntType(1), lanes))


def splat(builder, value, ty):
    """Vector type ``ty`` with ``value`` in every lane."""
    i32 = ir.IntType(32)
    return builder.shuffle_vector(
        builder.insert_element(ir.Constant(ty, None), value, ir.Constant(i32, 0)),
        ir.Constant(ty, None), ir.Constant(ir.VectorType(i32, ty.count), [0] * ty.count))


def _suffix(vec) -> str:
    element = vec.element
    kind = (f"i{element.width}" if isinstance(element, ir.IntType)
            else {"float": "f32", "double": "f64"}[str(element)])
    return f"v{vec.count}{kind}"


def masked_load(builder, vec):
    """``llvm.masked.load`` for vectors of type ``vec``: (pointer, alignment, mask,
    passthrough) -> vec; masked-off lanes read nothing (and never fault)."""
    i32, mvec = ir.IntType(32), ir.VectorType(ir.IntType(1), vec.count)
    return cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vec, [vec.as_pointer(), i32, mvec, vec]),
        f"llvm.masked.load.{_suffix(vec)}.p0")


def masked_store(builder, vec):
    """``llvm.masked.store`` for vectors of type ``vec``: (value, pointer, alignment, mask);
    masked-off lanes write nothing."""
    i32, mvec = ir.IntType(32), ir.VectorType(ir.IntType(1), vec.count)
    return cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [vec, vec.as_pointer(), i32, mvec]),
        f"llvm.masked.store.{_suffix(vec)}.p0")


@intrinsic
def prefetch(typingctx, src, i):
    """``prefetch(src, i)``: asks for the cache line of src[i] to be brought into L2
    (``prefetcht1``); no effect on results, never faults."""
    sig = types.void(src, types.intp)

    def codegen(context, builder, signature, args):
        sp = array_data(context, builder, signature.args[0], args[0])
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        at = builder.bitcast(builder.gep(sp, [args[1]]), i8p)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
            "llvm.prefetch.p0")
        builder.call(fn, [at, ir.Constant(i32, 0), ir.Constant(i32, 2), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen
