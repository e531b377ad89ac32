"""LLVM building blocks shared by the kernels written as numba intrinsics
(``outer_kernels.py``, ``pointwise.py``): an array's data pointer, and a prefetch."""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


def array_data(context, builder, ty, val):
    """The data pointer of array ``val`` of numba type ``ty``, inside an intrinsic's
    codegen."""
    return context.make_array(ty)(context, builder, val).data


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
