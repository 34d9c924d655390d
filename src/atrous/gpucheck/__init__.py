"""The compile check: every Triton kernel of atrous compiled ahead of time for named GPU
targets (sm_80, sm_90) without a GPU, through the launchers' own plans, with resource and
tensor-core checks. ``atrous verify --compile-only`` runs it; see docs/gpu-compile-check.md.

Modules: ``targets`` (known GPUs and shared-memory limits; imports neither torch nor
triton), ``cases`` (the matrix), ``compile`` (one launch -> registers, spills, shared
memory, tensor-core instructions), ``run`` (compile and check), ``summary`` (tables).
"""
